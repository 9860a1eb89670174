"""``LoadSampled``: the first transform of every medrec MONAI chain."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

from monai.transforms import MapTransform

from medrec.loader.sample import load_sample


class LoadSampled(MapTransform):
    """Load the manifest row held in a data dict and put its image under each key.

    The input dict holds a manifest row's fields (``format``, ``path``, ``files``, ``sample_id``, ...);
    they are kept, and the channel-first MetaTensor from :func:`medrec.loader.load_sample` is added
    under every key. The image is already channel-first with a RAS affine, so no
    ``EnsureChannelFirstd`` is needed before ``Orientationd`` / ``Spacingd``.

    Args:
        keys: where to put the image (usually ``("image",)``); with several keys each gets its own copy.
        max_bytes: memory budget per sample (see :func:`medrec.loader.load_sample`).

    Example:
        >>> from monai.transforms import Compose, Orientationd
        >>> chain = Compose([LoadSampled(keys="image"), Orientationd(keys="image", axcodes="RAS")])
        >>> # chain(manifest.iloc[0].to_dict())["image"].shape -> (1, I, J, K)
    """

    def __init__(self, keys: Hashable | Sequence[Hashable] = ("image",), max_bytes: int | None = None) -> None:
        super().__init__(keys, allow_missing_keys=False)
        self.max_bytes = max_bytes

    def __call__(self, data: Mapping) -> dict:
        """Return a new dict: the row's fields plus the loaded image under each key."""
        result = dict(data)
        image = load_sample(result, max_bytes=self.max_bytes)
        for index, key in enumerate(self.keys):
            result[key] = image if index == 0 else image.clone()
        return result
