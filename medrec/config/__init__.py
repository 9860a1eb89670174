"""The training step's config: one frozen, validated ``TrainConfig`` (the sections of a recipe that train).

Users write recipes (:mod:`medrec.workflow`, the one format of ``medrec run`` and ``medrec
train``); ``medrec train`` derives a ``TrainConfig`` from one (:func:`medrec.workflow.load_train_recipe`)
and writes it, resolved, as ``RUN/config.yaml``. :func:`load_config` reads such a file (or a recipe
that holds only these sections).

Paths in the YAML are relative to the YAML file's folder and are resolved to absolute paths
when loaded. Unknown keys and bad values raise one :class:`~medrec.errors.ConfigError` that
names every offending key by its dotted path and lists the allowed keys or values.

Example (``train.yaml``)::

    data:
      manifest: index/manifest.csv
    preprocessing: {}
    model:
      name: cnn_small
    training:
      epochs: 20
      batch_size: 4
      lr: 0.001
    threshold:
      method: sensitivity:0.95
"""

from __future__ import annotations

from medrec.config.acceptance import (
    ACCEPTANCE_METRICS,
    AcceptanceCriteria,
    AcceptanceCriterion,
    load_acceptance,
    parse_acceptance,
)
from medrec.config.base import ResolvedPath
from medrec.config.context import StudyContext
from medrec.config.data import DataConfig, SplitConfig
from medrec.config.loading import (
    describe_yaml_error,
    dump_config,
    format_validation_error,
    load_config,
    parse_config,
    read_yaml,
)
from medrec.config.model import MODEL_MODES, UNKNOWN_MODEL_ARGUMENT, ModelConfig
from medrec.config.operating_point import CalibrationConfig, ThresholdConfig
from medrec.config.train import TrainConfig, TrainingSections
from medrec.config.training import IMBALANCE_METHODS, TrainingConfig

__all__ = [
    "ACCEPTANCE_METRICS",
    "IMBALANCE_METHODS",
    "MODEL_MODES",
    "UNKNOWN_MODEL_ARGUMENT",
    "AcceptanceCriteria",
    "AcceptanceCriterion",
    "CalibrationConfig",
    "DataConfig",
    "ModelConfig",
    "ResolvedPath",
    "SplitConfig",
    "StudyContext",
    "ThresholdConfig",
    "TrainConfig",
    "TrainingConfig",
    "TrainingSections",
    "describe_yaml_error",
    "dump_config",
    "format_validation_error",
    "load_acceptance",
    "load_config",
    "parse_acceptance",
    "parse_config",
    "read_yaml",
]
