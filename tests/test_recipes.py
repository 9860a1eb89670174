"""Packaged recipes: reached by name from any folder, listed and shown by ``medrec recipes``, shipped in the wheel."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from medrec.errors import ConfigError
from medrec.workflow import find_recipe, load_workflow, packaged_recipes

REPO = Path(__file__).resolve().parents[1]
PACKAGED = REPO / "medrec" / "recipes"
SHIPPED = {"ct_lesion_annotated", "ct_lesion_3d", "mri_tumor_annotated", "mri_tumor_2d", "xr_nodule_annotated",
           "brats_mgmt_nifti"}



def test_packaged_recipes_are_listed_with_their_descriptions() -> None:
    recipes = {recipe.name: recipe for recipe in packaged_recipes()}
    assert SHIPPED <= set(recipes)
    for name, recipe in recipes.items():
        on_disk = yaml.safe_load((PACKAGED / f"{name}.yaml").read_text(encoding="utf-8"))
        assert recipe.description == on_disk["description"] and recipe.description
        assert on_disk["name"] == name  # the default output folder runs/<name> matches what users type


def test_every_packaged_recipe_validates_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in SHIPPED:
        assert load_workflow(name).name == name


def test_a_name_resolves_relative_data_paths_against_the_current_folder(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_workflow("ct_lesion_annotated")
    assert config.data.scans == tmp_path / "data" / "ct"
    assert config.data.labels == tmp_path / "data" / "ct" / "labels.csv"
    assert load_workflow("ct_lesion_annotated.yaml") == config


def test_an_existing_path_wins_over_a_packaged_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = yaml.safe_load((PACKAGED / "ct_lesion_3d.yaml").read_text(encoding="utf-8"))
    mine["name"] = "my_copy"
    mine["data"]["scans"] = "scans"
    (tmp_path / "ct_lesion_3d.yaml").write_text(yaml.safe_dump(mine), encoding="utf-8")
    (tmp_path / "recipe").mkdir()
    monkeypatch.chdir(tmp_path / "recipe")
    assert load_workflow("../ct_lesion_3d.yaml").data.scans == tmp_path / "scans"
    monkeypatch.chdir(tmp_path)
    assert find_recipe("ct_lesion_3d.yaml") == (Path("ct_lesion_3d.yaml"), tmp_path)
    assert load_workflow("ct_lesion_3d.yaml").name == "my_copy"
    assert load_workflow("ct_lesion_3d").name == "ct_lesion_3d"  # no file of that exact name: the packaged one


def test_an_unknown_name_suggests_the_nearest_and_lists_the_recipes(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_workflow("ct_lesion_annotatd")
    message = str(info.value)
    assert "did you mean 'ct_lesion_annotated'" in message
    assert all(name in message for name in SHIPPED) and "medrec recipes" in message


def test_a_missing_path_to_an_old_recipe_copy_points_at_the_packaged_one(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"workflows/ct_lesion_3d\.yaml: recipe not found.*'ct_lesion_3d'"):
        load_workflow("workflows/ct_lesion_3d.yaml")


def test_recipes_command_lists_names_and_descriptions(medrec_cli) -> None:
    code, out, _ = medrec_cli("recipes")
    assert code == 0
    rows = [[cell.strip() for cell in line.strip().strip("│").split("│")] for line in out.splitlines()]
    for recipe in packaged_recipes():
        row = next(row for row in rows if row[0] == recipe.name)
        assert row[1].startswith(" ".join(recipe.description.split()[:3])), out


def test_recipes_show_prints_the_recipe_to_stdout_for_editing(medrec_cli, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = medrec_cli("recipes", "show", "ct_lesion_3d")
    assert code == 0
    assert out == (PACKAGED / "ct_lesion_3d.yaml").read_text(encoding="utf-8")
    (tmp_path / "my.yaml").write_text(out, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    # the copy reads its data paths from its own folder, as the packaged one run by name reads them from here
    assert load_workflow("my.yaml") == load_workflow("ct_lesion_3d")


def test_recipes_show_unknown_name_is_a_one_line_error(medrec_cli) -> None:
    code, out, err = medrec_cli("recipes", "show", "mri_tumour_2d")
    assert code != 0 and out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "did you mean 'mri_tumor_2d'" in lines[0], err


def test_run_reaches_a_packaged_recipe_by_name(medrec_cli, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = medrec_cli("run", "ct_lesion_annotated", "--scans", "elsewhere", "-o", "run")
    assert code != 0
    assert "not found" not in err
    assert f"data.scans: {tmp_path / 'elsewhere'} does not exist" in " ".join(err.split()), err
    code, _, err = medrec_cli("run", "ct_lesion_3d", "-o", "run")
    assert code != 0 and f"{tmp_path / 'data' / 'ct-lesion'} does not exist" in " ".join(err.split()), err
    assert not (tmp_path / "run").exists()


def test_recipes_live_only_in_the_package() -> None:
    assert not (REPO / "workflows").exists(), "recipes have one home: medrec/recipes/ (medrec recipes show NAME)"


def test_the_wheel_ships_every_recipe(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(REPO / "medrec", source / "medrec", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    (tmp_path / "dist").mkdir()
    built = subprocess.run(
        [sys.executable, "-c",
         f"from setuptools import build_meta; print(build_meta.build_wheel({str(tmp_path / 'dist')!r}))"],
        cwd=source, capture_output=True, text=True, check=True,
    )
    wheel = tmp_path / "dist" / built.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(wheel) as archive:
        shipped = {Path(name).name for name in archive.namelist() if name.startswith("medrec/recipes/")}
    assert shipped == {path.name for path in PACKAGED.glob("*.yaml")}


def test_train_given_a_packaged_recipe_name_points_at_medrec_run(medrec_cli, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = medrec_cli("train", "ct_lesion_annotated", "-o", "run")
    assert code != 0 and "'medrec run ct_lesion_annotated'" in " ".join(err.split()), err
