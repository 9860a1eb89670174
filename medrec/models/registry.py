"""The model registry: ``@register_model`` on factory functions, ``create_model`` to build by name.

Recipes refer to models by registry name only (never by class path). Every factory takes
``spatial_dims``, ``in_channels`` and ``num_classes`` and returns a ``torch.nn.Module`` that maps a
``(B, C, *spatial)`` batch to ``(B, num_classes)`` logits.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from medrec.errors import ModelError
from medrec.models.aggregation import SliceAggregator

logger = logging.getLogger("medrec.models")

ModelFactory = Callable[..., torch.nn.Module]

SLICE_MODES: tuple[str, ...] = ("2d", "2.5d")


@dataclass(frozen=True)
class ModelInfo:
    """What ``medrec models`` shows about one registered model.

    Attributes:
        name: registry name, as used in recipes (``model.name``).
        family: architecture family (``cnn``, ``resnet``, ``densenet``, ``senet``, ``efficientnet``).
        description: one line on what it is and when to use it.
        supports: the spatial dimensions it can be built with.
        params_m_2d: millions of parameters for ``in_channels=1, num_classes=2`` in 2D (None if unsupported).
        params_m_3d: the same in 3D.
    """

    name: str
    family: str
    description: str
    supports: tuple[int, ...]
    params_m_2d: float | None
    params_m_3d: float | None


@dataclass(frozen=True)
class _Entry:
    factory: ModelFactory
    family: str
    description: str
    supports: tuple[int, ...]
    params_m: dict[int, float]


_REGISTRY: dict[str, _Entry] = {}


def register_model(
    name: str,
    *,
    family: str,
    description: str,
    supports: tuple[int, ...] = (2, 3),
    params_m: Mapping[int, float] | None = None,
) -> Callable[[ModelFactory], ModelFactory]:
    """Register a factory ``f(spatial_dims, in_channels, num_classes, **kw) -> nn.Module`` under ``name``.

    Args:
        name: the registry name (lower case, unique).
        family: architecture family shown by ``medrec models``.
        description: one line shown by ``medrec models``.
        supports: spatial dimensions the factory accepts.
        params_m: stated millions of parameters per spatial dimension for ``in_channels=1,
            num_classes=2`` (a test checks them against :func:`count_parameters`); counted when omitted.

    Returns:
        The decorator; it returns the factory unchanged.

    Raises:
        ModelError: the name is already registered.
    """

    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ModelError(f"model name {name!r} is registered twice; pick another name")
        _REGISTRY[name] = _Entry(factory, family, description, tuple(supports), dict(params_m or {}))
        return factory

    return decorator


def model_names() -> list[str]:
    """All registered model names, sorted."""
    return sorted(_REGISTRY)


def resolve_model_name(name: str) -> str:
    """The registry key of ``name`` (case and surrounding spaces ignored).

    Raises:
        ModelError: unknown name; the message suggests the nearest registered one.
    """
    if not isinstance(name, str):
        raise ModelError(f"model name must be a string, got {type(name).__name__} {name!r}")
    key = name.strip().lower()
    if key in _REGISTRY:
        return key
    close = difflib.get_close_matches(key, _REGISTRY, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ModelError(
        f"unknown model {name!r}; {hint}available models: {', '.join(model_names())} (see 'medrec models')"
    )


def _lookup(name: str) -> _Entry:
    return _REGISTRY[resolve_model_name(name)]


def model_family(name: str) -> str:
    """The family of registered model ``name`` (``finding-map`` models train on lesion targets)."""
    return _lookup(name).family


def create_model(
    name: str,
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    *,
    slice_mode: str | None = None,
    context: int | None = None,
    aggregation: str | None = None,
    top_k: int | None = None,
    slice_chunk: int = 64,
    **kwargs: Any,
) -> torch.nn.Module:
    """Build a registered model by name.

    With ``slice_mode`` set (``"2d"`` or ``"2.5d"``) the registered network is built in 2D and
    wrapped in a :class:`medrec.models.SliceAggregator`, so the returned module takes
    ``(B, in_channels, X, Y, Z)`` volumes and returns study-level logits. In that case
    ``spatial_dims`` may be given as 3 (the volume) or 2 (the per-slice network); both mean the same.

    Args:
        name: registry name (see :func:`list_models`).
        spatial_dims: 2 or 3.
        in_channels: image channels (1 for a single CT / MR / XR series).
        num_classes: number of output logits.
        slice_mode: None for a plain network; ``"2d"`` or ``"2.5d"`` for a slice-wise network on volumes.
        context: 2.5D: neighbouring slices on each side stacked as extra channels (default 1 for 2.5d);
            without ``slice_mode``, passed on to a factory that takes it (finding-map models).
        aggregation: slice modes only: ``max``, ``mean`` or ``topk_mean`` over slices (default ``max``).
        top_k: slice modes with ``topk_mean`` (default 3); without ``slice_mode``, passed on to the
            factory like ``context``.
        slice_chunk: slice modes only: slices per forward chunk (bounds memory).
        **kwargs: passed on to the factory (e.g. ``dropout=0.2``).

    Returns:
        The model, in training mode, freshly initialised (never downloaded weights).

    Raises:
        ModelError: unknown name (with the nearest valid one), unsupported dimension or bad argument.
    """
    entry = _lookup(name)
    for label, value in (("in_channels", in_channels), ("num_classes", num_classes)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ModelError(f"model {name!r}: {label} must be a positive integer, got {value!r}")
    if slice_mode is not None:
        if slice_mode not in SLICE_MODES:
            raise ModelError(
                f"model {name!r}: slice_mode must be one of {', '.join(SLICE_MODES)} or None, got {slice_mode!r}"
            )
        if spatial_dims not in (2, 3):
            raise ModelError(f"model {name!r}: spatial_dims must be 2 or 3, got {spatial_dims!r}")
        if slice_mode == "2d" and context:
            raise ModelError(f"model {name!r}: slice_mode '2d' takes no context (got {context}); use '2.5d'")
        # 2.5D without an explicit context means one neighbour on each side.
        slice_context = 1 if slice_mode == "2.5d" and not context else (context or 0)
        return create_slice_model(
            name,
            in_channels=in_channels,
            num_classes=num_classes,
            context=slice_context,
            aggregation=aggregation or "max",
            top_k=3 if top_k is None else top_k,
            chunk_size=slice_chunk,
            **kwargs,
        )
    if spatial_dims not in entry.supports:
        raise ModelError(
            f"model {name!r} supports spatial_dims {', '.join(map(str, entry.supports))}, got {spatial_dims!r}"
        )
    # Networks that slice volumes themselves (finding maps) take these as their own arguments.
    kwargs.update({key: value for key, value in (("context", context), ("top_k", top_k)) if value is not None})
    if aggregation is not None:
        raise ModelError(f"model {name!r}: aggregation applies to slice modes only (got {aggregation!r})")
    try:
        model = entry.factory(spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes, **kwargs)
    except TypeError as e:
        raise ModelError(f"model {name!r}: bad argument ({e})") from e
    return model


# The arguments every factory receives from medrec itself: never a recipe's ``model.kwargs``.
FACTORY_ARGUMENTS: tuple[str, ...] = ("spatial_dims", "in_channels", "num_classes")


def _keyword_parameters(function: Callable[..., Any]) -> tuple[list[inspect.Parameter], bool]:
    """The parameters of ``function`` that can be given by keyword, and whether it takes ``**kwargs``."""
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return [], True
    named = [p for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"]
    return named, any(p.kind is p.VAR_KEYWORD for p in parameters)


@functools.cache
def model_kwargs(name: str) -> tuple[str, ...] | None:
    """The arguments a recipe's ``model.kwargs`` may pass to registered model ``name``, sorted.

    They are the factory's own keyword parameters and, when the factory forwards ``**kwargs`` to a
    network class, that class's parameters that have a default (through its base classes while
    their ``__init__`` forwards ``**kwargs`` too), less the ones the factory already sets. Only the
    factory's body says where its ``**kwargs`` go, so the class is found by building the model on
    the ``meta`` device (no memory, no initialisation), and an argument counts as set by the
    factory when passing it again is refused.

    Args:
        name: registry name (case and surrounding spaces ignored).

    Returns:
        The accepted names, or None when the model cannot be built with its defaults to find them out
        (then nothing can be checked before training).

    Raises:
        ModelError: unknown name.
    """
    entry = _lookup(name)
    own, forwards = _keyword_parameters(entry.factory)
    accepted = {p.name for p in own if p.name not in FACTORY_ARGUMENTS and not p.name.startswith("_")}
    if not forwards:
        return tuple(sorted(accepted))
    dims = entry.supports[0]

    def build(**kwargs: Any) -> torch.nn.Module:
        with torch.device("meta"):
            return entry.factory(spatial_dims=dims, in_channels=1, num_classes=2, **kwargs)

    try:
        network = type(build())
    except Exception:  # noqa: BLE001  (any failure of a default build means: cannot tell)
        return None
    defaults: dict[str, Any] = {}
    for cls in network.__mro__:
        if cls is torch.nn.Module:
            break
        if "__init__" not in vars(cls):
            continue
        parameters, forwards = _keyword_parameters(vars(cls)["__init__"])
        for parameter in parameters:
            if parameter.default is not parameter.empty:
                defaults.setdefault(parameter.name, parameter.default)
        if not forwards:
            break
    for key, default in defaults.items():
        if key in accepted or key in FACTORY_ARGUMENTS:
            continue
        try:
            build(**{key: default})
        except TypeError as e:
            if f"'{key}'" in str(e):
                continue  # "got multiple values for keyword argument": the factory sets it
        except Exception:  # noqa: BLE001  (a value the factory rejects still names a known argument)
            pass
        accepted.add(key)
    return tuple(sorted(accepted))


@functools.cache
def count_parameters(name: str, spatial_dims: int, in_channels: int = 1, num_classes: int = 2) -> int:
    """Number of parameters of a registered model, counted on the ``meta`` device (no memory, no init cost)."""
    with torch.device("meta"):
        model = create_model(name, spatial_dims, in_channels, num_classes)
    return sum(parameter.numel() for parameter in model.parameters())


def list_models(with_params: bool = True) -> list[ModelInfo]:
    """Describe every registered model, sorted by family then name.

    Args:
        with_params: report parameters (``in_channels=1, num_classes=2``): the registered figures, or
            counted on the meta device for models registered without them.

    Returns:
        One :class:`ModelInfo` per model.
    """
    infos = []
    for name, entry in _REGISTRY.items():
        params: dict[int, float | None] = {2: None, 3: None}
        if with_params:
            for dims in entry.supports:
                stated = entry.params_m.get(dims)
                params[dims] = stated if stated is not None else round(count_parameters(name, dims) / 1e6, 3)
        infos.append(ModelInfo(name, entry.family, entry.description, entry.supports, params[2], params[3]))
    return sorted(infos, key=lambda info: (info.family, info.name))


def create_slice_model(
    name: str,
    in_channels: int,
    num_classes: int,
    context: int = 0,
    aggregation: str = "max",
    top_k: int = 3,
    chunk_size: int = 64,
    **kwargs: Any,
) -> SliceAggregator:
    """Build registered 2D network ``name`` for ``in_channels * (2 * context + 1)`` inputs and wrap it.

    Args:
        name: registry name.
        in_channels: channels of the volume.
        num_classes: output logits.
        context: 2.5D neighbours on each side (0: plain 2D slices).
        aggregation: ``max``, ``mean`` or ``topk_mean``.
        top_k: for ``topk_mean``.
        chunk_size: slices per forward chunk.
        **kwargs: passed to the network factory.

    Returns:
        A :class:`SliceAggregator` taking ``(B, in_channels, X, Y, Z)`` volumes.
    """
    if not isinstance(context, int) or isinstance(context, bool) or context < 0:
        raise ModelError(f"slice model {name!r}: context must be an integer >= 0, got {context!r}")
    model2d = create_model(name, 2, in_channels * (2 * context + 1), num_classes, **kwargs)
    return SliceAggregator(model2d, aggregation=aggregation, top_k=top_k, context=context, chunk_size=chunk_size)
