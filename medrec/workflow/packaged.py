"""The recipes that ship inside the package (``medrec/recipes/NAME.yaml``), and how a recipe argument
(a file, or a packaged recipe's name) is found: a path to a recipe file wins over a name.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from medrec.config import read_yaml
from medrec.errors import ConfigError

RECIPE_SUFFIXES: tuple[str, ...] = (".yaml", ".yml")


@dataclass(frozen=True)
class PackagedRecipe:
    """A recipe that ships inside the package.

    Attributes:
        name: what ``medrec run NAME`` and ``medrec recipes show NAME`` take (the file name without ``.yaml``).
        description: the recipe's ``description`` line.
        path: the file, ``medrec/recipes/NAME.yaml``.
    """

    name: str
    description: str
    path: Path


def recipes_folder() -> Path:
    """The folder of the packaged recipes (``medrec/recipes/``, package data of the installed medrec)."""
    return Path(str(resources.files("medrec") / "recipes"))


def packaged_recipes() -> list[PackagedRecipe]:
    """Every packaged recipe, sorted by name."""
    recipes = []
    for path in sorted(recipes_folder().glob("*.yaml")):
        content = read_yaml(path, "packaged recipe not found")
        description = content.get("description", "") if isinstance(content, dict) else ""
        recipes.append(PackagedRecipe(path.stem, " ".join(str(description or "").split()), path))
    return recipes


def _recipe_stem(name: str) -> str:
    for suffix in RECIPE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _nearest_hint(stem: str, names: Sequence[str]) -> str:
    close = difflib.get_close_matches(stem, list(names), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def packaged_recipe(name: str) -> PackagedRecipe:
    """The packaged recipe called ``name`` (``ct_lesion_3d`` or ``ct_lesion_3d.yaml``).

    Raises:
        ConfigError: no packaged recipe has that name; the message suggests the nearest and lists them all.
    """
    recipes = {recipe.name: recipe for recipe in packaged_recipes()}
    stem = _recipe_stem(name.strip())
    if stem in recipes:
        return recipes[stem]
    raise ConfigError(f"{name}: no packaged recipe of that name{_nearest_hint(stem, list(recipes))}; "
                      f"packaged recipes: {', '.join(recipes)} (see 'medrec recipes')")


def find_recipe(recipe: str | Path) -> tuple[Path, Path]:
    """The recipe file that ``recipe`` names and the folder its relative paths are taken from.

    An existing file wins: its paths are relative to its own folder. Otherwise a bare name
    (``ct_lesion_annotated``, with or without ``.yaml``) is a packaged recipe, whose paths are
    relative to the current folder: a packaged recipe run by name reads ``data/ct`` from where the
    user is, as does the copy that ``medrec recipes show NAME > my.yaml`` puts there.

    Raises:
        ConfigError: neither a file nor a packaged recipe; the message names the nearest packaged recipe.
    """
    path = Path(recipe)
    if path.is_file():
        return path, path.absolute().parent
    recipes = {packaged.name: packaged for packaged in packaged_recipes()}
    stem = _recipe_stem(path.name)
    bare_name = path.parent == Path(".")
    if bare_name and stem in recipes:
        return recipes[stem].path, Path.cwd()
    if stem in recipes:
        # a path to a copy that is not there, such as workflows/NAME.yaml of older documentation
        hint = (f"; the packaged recipe {stem!r} has this name: 'medrec run {stem}', or "
                f"'medrec recipes show {stem} > {path.name}' for a copy to edit")
    else:
        hint = _nearest_hint(stem, list(recipes))
    what = "no such recipe file or packaged recipe" if bare_name else "recipe not found"
    raise ConfigError(f"{recipe}: {what}{hint}; packaged recipes: {', '.join(recipes)} (see 'medrec recipes')")
