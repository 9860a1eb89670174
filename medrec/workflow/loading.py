"""Reading a recipe for a command: :func:`load_workflow` for ``medrec run`` (the scans to index),
:func:`load_train_recipe` for ``medrec train`` (a manifest, and which sections it leaves to ``run``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from medrec.config import TrainConfig, format_validation_error, read_yaml
from medrec.errors import ConfigError
from medrec.workflow.packaged import _recipe_stem, find_recipe
from medrec.workflow.recipe import INDEX_DATA_KEYS, RECIPE_NAME, TRAIN_DATA_KEYS, WorkflowConfig, train_config_of


def read_recipe(recipe: str | Path, overrides: dict[str, Any] | None = None) -> tuple[WorkflowConfig, Path]:
    """Read and validate a recipe, given as a file or as the name of a packaged recipe.

    What each command needs of it (``data.scans`` for ``run``, ``data.manifest`` for ``train``)
    is checked by :func:`load_workflow` and :func:`load_train_recipe`.

    Args:
        recipe: a recipe file, or a packaged recipe's name (see :func:`find_recipe`; a file wins).
            Relative paths are taken from the file's folder, or from the current folder for a
            packaged recipe named by name.
        overrides: dotted keys to set before validation, e.g. ``{"data.scans": "/x"}``
            (relative override paths are taken from the current folder).

    Returns:
        The recipe and the file it was read from.

    Raises:
        ConfigError: unknown recipe, bad YAML, unknown keys or bad values (each named by dotted key).
    """
    path, base = find_recipe(recipe)
    source = str(recipe)
    data = read_yaml(path, "recipe not found (see 'medrec recipes')")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a recipe is a mapping of sections (name, data, model, training, ...)")
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        if isinstance(value, Path):
            value = str(value.absolute())
        node = data
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: '{part}' must be a mapping to set {dotted}")
        node[last] = value
    try:
        return WorkflowConfig.model_validate(data, context={"base_dir": str(base)}), path
    except ValidationError as e:
        message = format_validation_error(e, source, root=WorkflowConfig)
        raise ConfigError(message.replace("training config", "recipe")) from e


def load_workflow(recipe: str | Path, overrides: dict[str, Any] | None = None) -> WorkflowConfig:
    """A recipe for ``medrec run``: :func:`read_recipe`, which must name the scans and no manifest.

    A recipe without ``name`` takes its file's name.

    Raises:
        ConfigError: as :func:`read_recipe`; no ``data.scans``; ``data.manifest`` / ``data.splits``
            (``medrec train``'s keys: ``run`` indexes and splits the scans itself).
    """
    config, path = read_recipe(recipe, overrides)
    given = [f"data.{key}" for key in TRAIN_DATA_KEYS if getattr(config.data, key) is not None]
    if given:
        raise ConfigError(
            f"{recipe}: {' and '.join(given)} {'are' if len(given) > 1 else 'is'} for 'medrec train': 'medrec run' "
            f"indexes data.scans and splits by the split section itself; remove {' / '.join(given)}, or train on "
            f"{'them' if len(given) > 1 else 'it'} with 'medrec train {recipe} -o RUN'")
    if config.data.scans is None:
        raise ConfigError(f"{recipe}: invalid recipe: 'data.scans' is required: the scan folder that 'medrec run' "
                          "indexes (or --scans DIR)")
    if config.name is None:
        stem = _recipe_stem(path.name)
        if not re.match(RECIPE_NAME, stem):
            raise ConfigError(f"{recipe}: invalid recipe: 'name' is required (the file's name {stem!r} cannot be one: "
                              "letters, digits, '_', '.', '-')")
        config = config.model_copy(update={"name": stem})
    return config


@dataclass(frozen=True)
class TrainRecipe:
    """What ``medrec train`` takes from a recipe.

    Attributes:
        config: the training step's config.
        used: the recipe's keys and sections that training uses.
        ignored: those it leaves to ``medrec run`` (only those the file sets).
    """

    config: TrainConfig
    used: tuple[str, ...]
    ignored: tuple[str, ...]

    def describe(self) -> str:
        """One line: which keys and sections of the recipe training uses and which it ignores."""
        text = f"uses {', '.join(self.used)}"
        if self.ignored:
            text += f"; ignores {', '.join(self.ignored)} (used by 'medrec run' only)"
        return text


def load_train_recipe(recipe: str | Path, manifest: Path | None = None, splits: Path | None = None) -> TrainRecipe:
    """A recipe (or a training config: the same format) for ``medrec train``.

    Training reads ``data.manifest`` (``manifest``, from the current folder, wins) and
    ``data.splits`` (likewise ``splits``; without one the ``split`` section makes the splits), the
    label keys of ``data``, ``task``, and the ``split`` (its ``fold`` and ``check_pixels`` also with a splits
    file), ``preprocessing``, ``model``, ``training``, ``threshold`` and ``calibration`` sections.
    ``name``, ``description``, ``data.scans`` / ``labels`` / ``match_on``, ``index`` and
    ``evaluation`` are validated but not used (the labels file still gives the lesion masks when it
    has a ``mask`` column and ``data.masks`` is not set, as in ``medrec run``).

    Raises:
        ConfigError: as :func:`read_recipe`; no manifest (neither ``data.manifest`` nor ``manifest``).
    """
    config, _ = read_recipe(recipe, {"data.manifest": manifest, "data.splits": splits})
    data = config.data
    if data.manifest is None:
        raise ConfigError(
            f"{recipe}: no manifest to train on: pass --manifest INDEX/manifest.csv (from 'medrec index') or set "
            f"data.manifest in the recipe; 'medrec train' does not index data.scans: to index, split, train and "
            f"evaluate in one go run 'medrec run {recipe}'")
    train_config = train_config_of(config, Path(data.manifest), Path(data.splits) if data.splits else None,
                                   source=f"{recipe} (medrec train)")
    masks_from_labels = data.masks is None and train_config.data.masks is not None
    used = ["task"] if "task" in config.model_fields_set else []
    used += ["data.manifest", "data.splits" if data.splits else "split (to make the splits)"]
    used += [f"data.{key}" for key in ("lesions", "masks", "classes", "positive_class")
             if getattr(data, key) is not None]
    if masks_from_labels:
        used.append("data.labels (its mask column)")
    if data.splits is not None and "split" in config.model_fields_set:
        used.append("split (fold, check_pixels)")
    used += ["preprocessing", "model", "training", "threshold", "calibration"]
    ignored = [name for name in ("name", "description") if name in config.model_fields_set]
    ignored += [f"data.{key}" for key in INDEX_DATA_KEYS
                if key in data.model_fields_set and not (key == "labels" and masks_from_labels)]
    ignored += [name for name in ("index", "evaluation") if name in config.model_fields_set]
    return TrainRecipe(train_config, tuple(used), tuple(ignored))
