"""Grad-CAM heat maps of the positive class, saved on the original image grid.

The map is MONAI's :class:`monai.visualize.GradCAM` on the last convolution the model runs,
with two deliberate choices:

- Polarity. MONAI's default post-processing (``default_normalizer``) maps (min, max) to (1, 0),
  which would make high values mean *no* evidence. It is replaced: the map is ReLU(Grad-CAM) of the
  positive class's log-odds, divided by its maximum, so 1 marks the strongest evidence *for* the
  positive class and 0 none (a map of zeros means nothing in the image pushed towards positive).
- Target. The backpropagated score is the log-odds ``logit[pos] - logsumexp(other logits)``
  (the logit itself for single-output models): the quantity that decides the probability, so
  evidence against the other classes is not counted as evidence for this one.

Maps go back from the preprocessed grid to the input image's grid by resampling with the two
affines (world = affine_pre @ voxel_pre = affine_orig @ voxel_orig), which undoes any chain of
MONAI spatial transforms that keep their MetaTensor affine up to date (orientation, spacing,
crop, pad, resize). The NIfTI is written with the input image's RAS affine, so it overlays the
scan in any viewer. File names come from the sample id only.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import io
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medrec.atomicio import write_bytes
from medrec.errors import ModelError, OutputError
from medrec.rundir import ScoringRun, positive_index_of

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def safe_file_stem(sample_id: str) -> str:
    """``sample_id`` when it is a plain name, else a hash of it: never a path, never header text."""
    text = str(sample_id)
    if _SAFE_NAME.fullmatch(text) and ".." not in text:
        return text
    return "sample-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class ClassLogOdds(nn.Module):
    """``(B, 1)`` log-odds of one class from a classifier's logits (a single logit passes through)."""

    def __init__(self, model: nn.Module, class_index: int) -> None:
        super().__init__()
        self.model = model
        self.class_index = class_index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        if logits.ndim == 1:
            logits = logits[:, None]
        if logits.shape[1] == 1:
            return logits
        others = torch.cat([logits[:, : self.class_index], logits[:, self.class_index + 1 :]], dim=1)
        return (logits[:, self.class_index] - torch.logsumexp(others, dim=1))[:, None]


def _is_slice_model(model: nn.Module) -> bool:
    return hasattr(model, "slice_model") and hasattr(model, "chunk_size") and hasattr(model, "slice_logits")


def find_last_conv(model: nn.Module, example: torch.Tensor) -> str:
    """Name (as in ``named_modules``) of the last convolution that runs in a forward pass.

    Found by running the model once with hooks, so it follows execution order, not declaration
    order (a ResNet's shortcut convolutions are declared after the block's main path).

    Raises:
        ModelError: the model runs no convolution.
    """
    fired: list[str] = []
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd) and not isinstance(module, nn.modules.conv._ConvTransposeNd):
            handles.append(module.register_forward_hook(lambda _m, _i, _o, name=name: fired.append(name)))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    if not fired:
        raise ModelError("--explain: the model has no convolution layer, so Grad-CAM cannot be computed")
    return fired[-1]


def grad_cam(model: nn.Module, image: torch.Tensor, class_index: int) -> np.ndarray:
    """Grad-CAM of ``class_index`` for one preprocessed image ``(C, *spatial)``, on that grid, in [0, 1].

    Args:
        model: the classifier (left untouched: a private copy gets the hooks).
        image: the preprocessed image (what the model sees), channel-first, no batch axis.
        class_index: the class whose evidence is mapped (the positive class).

    Returns:
        ``np.float32`` array of shape ``spatial``; 1 = strongest evidence for the class.
    """
    from monai.visualize import GradCAM

    work = copy.deepcopy(model).float().eval()
    device = next(iter(work.parameters()), torch.empty(0)).device
    for module in work.modules():
        if getattr(module, "inplace", False):
            module.inplace = False  # full backward hooks refuse in-place outputs
    for parameter in work.parameters():
        parameter.requires_grad_(True)
    slices = _is_slice_model(work)
    if slices:
        work.chunk_size = 1 << 30  # one slice-model call, so the hooks see every slice
    target = ClassLogOdds(work, class_index)
    x = image[None].to(device=device, dtype=torch.float32)
    layer = find_last_conv(target, x)
    cam = GradCAM(nn_module=target, target_layers=layer, postprocessing=lambda m: m)
    with torch.enable_grad():
        raw = cam.compute_map(x.clone().requires_grad_(True), class_idx=0)  # (b, 1, *feature grid)
    raw = raw.detach().float()
    spatial = tuple(x.shape[2:])
    if slices:
        depth = spatial[-1]
        # (B * Z, 1, h, w) -> (B, 1, h, w, Z): slice k of the volume is batch item k
        raw = raw.reshape(1, depth, *raw.shape[2:]).permute(0, 2, 3, 1)[:, None]
    if raw.ndim - 2 != len(spatial):
        raise ModelError(f"--explain: feature map of layer {layer} has shape {tuple(raw.shape)}, "
                         f"which does not match an input of shape {tuple(x.shape)}")
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(spatial)]
    upsampled = F.interpolate(raw, size=spatial, mode=mode, align_corners=False)[0, 0].cpu().numpy()
    upsampled = np.maximum(upsampled, 0.0)
    peak = float(upsampled.max())
    return (upsampled / peak if peak > 0 else upsampled).astype(np.float32)


def _spatial_affine(affine: np.ndarray, dims: int) -> np.ndarray:
    """The ``(dims+1, dims+1)`` affine of a ``dims``-D grid from MONAI's (usually 4x4) affine."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape == (dims + 1, dims + 1):
        return affine
    keep = [*range(dims), affine.shape[0] - 1]
    return affine[np.ix_(keep, keep)]


def resample_to_grid(
    values: np.ndarray, source_affine: np.ndarray, target_affine: np.ndarray, target_shape: tuple[int, ...]
) -> np.ndarray:
    """Resample ``values`` (on the grid of ``source_affine``) onto the grid ``target_affine`` / ``target_shape``.

    Linear interpolation; outside the source grid (beyond one voxel) the result is 0.
    """
    from scipy.ndimage import affine_transform

    dims = values.ndim
    source = _spatial_affine(source_affine, dims)
    target = _spatial_affine(target_affine, dims)
    mapping = np.linalg.inv(source) @ target  # target voxel -> source voxel
    padded = np.pad(values.astype(np.float64), 1, mode="edge")
    resampled = affine_transform(
        padded, mapping[:dims, :dims], offset=mapping[:dims, dims] + 1.0, output_shape=tuple(target_shape),
        order=1, mode="constant", cval=0.0,
    )
    return resampled.astype(np.float32)


def nifti_bytes(values: np.ndarray, affine: np.ndarray) -> bytes:
    """A gzipped NIfTI-1 file (fixed gzip timestamp, so equal maps give equal bytes)."""
    import nibabel as nib

    image = nib.Nifti1Image(np.asarray(values, dtype=np.float32), np.asarray(affine, dtype=np.float64))
    image.header.set_xyzt_units("mm")
    return gzip.compress(image.to_bytes(), mtime=0)


def thumbnail_png(image: np.ndarray, heat: np.ndarray, title: str) -> bytes:
    """PNG of the most activated slice (or the 2D image) with the heat map overlaid.

    ``image`` and ``heat`` are ``[i, j(, k)]`` arrays on the same grid; the slice is shown as the
    DICOM pixel array (``vol[:, :, k].T``: rows down, columns right).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    if heat.ndim == 3:
        k = int(np.argmax(heat.reshape(-1, heat.shape[2]).max(axis=0)))
        picture, overlay = image[:, :, k].T, heat[:, :, k].T
        title = f"{title}  slice k={k}"
    else:
        picture, overlay = image.T, heat.T
    low, high = np.percentile(picture, [1, 99]) if picture.size else (0.0, 1.0)
    figure = Figure(figsize=(4, 4), dpi=100)
    axes = figure.add_axes((0, 0, 1, 0.92))
    axes.imshow(picture, cmap="gray", vmin=low, vmax=high if high > low else low + 1, interpolation="nearest")
    axes.imshow(np.ma.masked_less(overlay, 0.25), cmap="inferno", vmin=0, vmax=1, alpha=0.45, interpolation="nearest")
    axes.set_axis_off()
    figure.suptitle(title, fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


class GradCamExplainer:
    """Writes ``DIR/<sample_id>.nii.gz`` (map on the input grid) and ``DIR/<sample_id>.png`` per sample.

    Args:
        run: the loaded run (``model``, ``classes``).
        out_dir: the ``--explain`` folder.
        device: where the model lives.
    """

    def __init__(self, run: ScoringRun, out_dir: str | Path, device: torch.device | None = None) -> None:
        self.run = run
        self.out_dir = Path(out_dir)
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(
                f"{self.out_dir}: cannot create the --explain folder ({e.strerror}); choose a writable folder"
            ) from e
        self.device = device
        self.class_index = positive_index_of(run)
        self.written: list[Path] = []
        self.failed: list[str] = []

    def explain(self, row: Mapping[str, Any], image: torch.Tensor, affine: np.ndarray | None,
                class_index: int | None = None) -> list[Path]:
        """Compute and save the map of one sample.

        Args:
            row: its manifest row (loaded again for the original grid and the thumbnail).
            image: its preprocessed tensor ``(C, *spatial)``.
            affine: the preprocessed tensor's affine (None: assumed equal to the original's).
            class_index: target class for multi-class runs (default: the positive class of a binary run).

        Returns:
            The written paths.
        """
        from medrec.loader import load_sample

        target = self.class_index if class_index is None else class_index
        if target is None:
            raise ModelError("--explain on a multi-class run needs the class to explain")
        from medrec.models.findings import is_finding_model

        if is_finding_model(self.run.model):  # the model's own finding map (probability), no Grad-CAM
            from medrec.score.findings import finding_probability_map

            heat = finding_probability_map(self.run.model, image, self.device)
        else:
            heat = grad_cam(self.run.model, image, target)
        original = load_sample(dict(row))
        original_array = np.asarray(original[0].detach().cpu().numpy(), dtype=np.float32)
        original_affine = np.asarray(torch.as_tensor(original.affine).cpu(), dtype=np.float64)
        if affine is None:
            if tuple(heat.shape) != tuple(original_array.shape):
                raise ModelError(
                    f"sample {row['sample_id']}: the preprocessing returns no affine and changes the grid "
                    f"({tuple(original_array.shape)} -> {tuple(heat.shape)}), so the Grad-CAM map cannot be placed "
                    "on the input image"
                )
            affine = original_affine
        source_affine = affine
        on_input = resample_to_grid(heat, source_affine, original_affine, original_array.shape)
        stem = safe_file_stem(str(row["sample_id"]))
        nifti_affine = _spatial_affine(original_affine, 3) if original_affine.shape == (4, 4) else original_affine
        nifti_path = self.out_dir / f"{stem}.nii.gz"
        png_path = self.out_dir / f"{stem}.png"
        write_bytes(nifti_path, nifti_bytes(on_input, nifti_affine))
        write_bytes(png_path, thumbnail_png(original_array, on_input, stem))
        self.written.extend([nifti_path, png_path])
        return [nifti_path, png_path]

    def explain_or_warn(self, row: Mapping[str, Any], image: torch.Tensor, affine: np.ndarray | None,
                        class_index: int | None = None) -> list[Path]:
        """:meth:`explain`, but a failure only warns: a missing heat map never costs the sample its score."""
        from medrec.console import console
        from medrec.data.dataset import failure_reason

        try:
            return self.explain(row, image, affine, class_index)
        except Exception as e:  # noqa: BLE001 - the score row is already computed and must be kept
            self.failed.append(str(row["sample_id"]))
            console.print(f"[yellow]warning:[/] no Grad-CAM map for sample {row['sample_id']}: {failure_reason(e)}")
            return []
