"""After an anomaly run's epochs: fit what its scorer calls normal on the normal training studies.

``training.anomaly_method: features`` fits the Gaussian of the finding network's features
(:class:`~medrec.models.normal_reference.FeatureDistance`) on feature vectors of body voxels of
the normal training slices; ``reconstruction`` fits the reference of the autoencoder's
reconstruction error (:class:`~medrec.models.anomaly_maps.ResidualMapNet`). Both then set the
offset and scale that make the map a logit (:class:`~medrec.models.normal_reference.NormalReference`).
Up to :data:`REFERENCE_STUDIES` studies are read, :data:`VOXELS_PER_STUDY` voxels drawn from the
body of each (seeded), so the fit costs about one epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medrec.data.dataset import SampleStore
from medrec.models.aggregation import stack_slice_context
from medrec.models.findings import pool_map
from medrec.transforms.anomaly import body_mask

# The finding network's convolutions whose features the Gaussian describes (a middle and the last
# one: measured on the MR phantoms, validation AUC 0.73 against 0.66 for the last alone).
DISTANCE_LAYERS: tuple[int, ...] = (3, 5)
REFERENCE_STUDIES = 120
VOXELS_PER_STUDY = 1500
CHUNK = 32


def _stacks(volume: np.ndarray, context: int) -> torch.Tensor:
    """The ``(N, C', X, Y)`` slice stacks of a ``(C, X, Y, Z)`` volume (a 2D image: one stack)."""
    image = torch.from_numpy(np.asarray(volume, dtype=np.float32))
    if image.ndim == 3:
        return image[None]
    return stack_slice_context(image[None], context)[0]


def _body(volume: np.ndarray) -> torch.Tensor:
    """The body mask ``(N, X, Y)`` matching :func:`_stacks`."""
    mask = torch.from_numpy(body_mask(np.asarray(volume, dtype=np.float32)))
    return mask[None] if mask.ndim == 2 else mask.permute(2, 0, 1)


def _draw(values: torch.Tensor, mask: torch.Tensor, count: int, rng: np.random.Generator) -> torch.Tensor:
    """Up to ``count`` rows of ``values`` ``(N, F, X, Y)`` where ``mask`` ``(N, X, Y)`` holds."""
    if mask.shape[-2:] != values.shape[-2:]:
        mask = F.interpolate(mask[:, None].float(), size=values.shape[-2:], mode="nearest")[:, 0] > 0.5
    rows = values.permute(0, 2, 3, 1)[mask]
    if len(rows) > count:
        rows = rows[torch.from_numpy(rng.choice(len(rows), count, replace=False))]
    return rows


@torch.no_grad()
def fit_normal_reference(model: torch.nn.Module, method: str, store: SampleStore, normal_ids: Sequence[str],
                         seed: int, log: Callable[[str], None]) -> None:
    """Fit ``model``'s normal reference (``method`` ``features`` or ``reconstruction``) in place.

    ``features`` first fits the Gaussian on feature vectors drawn from the body of the chosen
    studies; then, for either method, each chosen study's whole volume is scored raw (pooled as
    the model pools its map) and the median and spread of those scores become the reference.

    Args:
        model: the trained finding-map model (its best weights), unwrapped.
        method: ``training.anomaly_method``.
        store: the preprocessed samples.
        normal_ids: the normal training studies.
        seed: draws the studies and voxels.
    """
    model.eval()
    rng = np.random.default_rng(seed)
    chosen = [normal_ids[i] for i in sorted(rng.permutation(len(normal_ids))[:REFERENCE_STUDIES])]
    reference = model.distance if method == "features" else model.net
    what = "the reconstruction error"
    if method == "features":
        bank = _feature_bank(model, store, chosen, rng)
        reference.fit(bank)
        what = (f"a Gaussian of {bank.shape[1]} features (convolutions {list(model.distance_layers)}) fitted on "
                f"{len(bank)} body voxels")
    reference.reset()
    raw = torch.cat([pool_map(model.finding_map(torch.from_numpy(np.asarray(store.get(sample_id).array,
                                                                         dtype=np.float32))[None]),
                              model.pooling, model.top_k) for sample_id in chosen])
    reference.set_reference(raw)
    log(f"normal reference ({method}): {what}; {len(chosen)} normal training studies score (pooled, raw) median "
        f"{float(reference.offset):.4g}, spread {float(reference.scale):.4g}: logit 0 and 1 unit of the map")


def _feature_bank(model: torch.nn.Module, store: SampleStore, chosen: Sequence[str],
                  rng: np.random.Generator) -> torch.Tensor:
    """Feature vectors of up to :data:`VOXELS_PER_STUDY` body voxels of each study."""
    net, context = model.net, int(getattr(model, "context", 0))
    drawn: list[torch.Tensor] = []
    for sample_id in chosen:
        volume = store.get(sample_id).array
        stacks, body = _stacks(volume, context), _body(volume)
        for start in range(0, len(stacks), CHUNK):
            chunk = stacks[start : start + CHUNK]
            share = -(-VOXELS_PER_STUDY * len(chunk) // len(stacks))  # this chunk's part of the study's voxels
            drawn.append(_draw(net.layer_features(chunk, model.distance_layers), body[start : start + CHUNK],
                               share, rng))
    return torch.cat(drawn)
