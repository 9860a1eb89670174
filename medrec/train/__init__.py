"""Training: the epoch loop, threshold choice, temperature calibration and DDP.

Decisions made on the validation split only (the test split is never loaded during training):
the best epoch (highest validation AUC; macro one-vs-rest for multi-class; ties broken by lower
validation loss), the calibration temperature (fitted on the best weights' validation logits) and
the binary operating threshold, chosen on the *calibrated* validation probabilities so that it
applies to the probabilities that ``load_run(...).predict`` returns. Multi-class models predict the
argmax of the calibrated probabilities and have no threshold.

Reproducibility: the same config and seed give bit-identical weights on the same machine when the
device is the CPU, the torch build, ``training.num_workers``, the torch thread count
(``torch.set_num_threads`` / ``OMP_NUM_THREADS``) and the number of torchrun processes are the same
and ``training.deterministic`` is on (the default). A run resumed with ``--resume`` from its last
completed epoch ends with the same weights as an uninterrupted one under the same conditions. On
CUDA, AMP and some kernels make results close but not bit-identical.

Examples:
    >>> from medrec.config import load_config
    >>> from medrec.train import train
    >>> result = train(load_config("train.yaml"), "runs/ct-lesion")
"""

from __future__ import annotations

from medrec.thresholds import ThresholdChoice, choose_threshold
from medrec.train.calibration import TemperatureFit, calibrated_probabilities, fit_temperature
from medrec.train.loop import train
from medrec.train.result import RunResult

__all__ = [
    "RunResult",
    "TemperatureFit",
    "ThresholdChoice",
    "calibrated_probabilities",
    "choose_threshold",
    "fit_temperature",
    "train",
]
