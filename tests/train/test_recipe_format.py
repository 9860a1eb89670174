"""One recipe format for ``medrec run`` and ``medrec train``.

A recipe copied with ``medrec recipes show`` trains with ``medrec train --manifest``; ``train``
says which sections it used and ignored; ``run`` refuses ``train``'s keys; the README's step-by-step
block (index, split, train) runs as written.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import yaml

from medrec.workflow import load_train_recipe, packaged_recipes

README = Path(__file__).resolve().parents[2] / "README.md"
TRAIN_SECTIONS = ("split", "preprocessing", "model", "training", "threshold", "calibration")



def _show(medrec_cli: Callable[..., tuple[int, str, str]], name: str, target: Path) -> Path:
    """``medrec recipes show NAME > target``."""
    code, out, _ = medrec_cli("recipes", "show", name)
    assert code == 0
    target.write_text(out, encoding="utf-8")
    return target


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


@pytest.mark.parametrize("name", [recipe.name for recipe in packaged_recipes()])
def test_every_packaged_recipe_copy_is_a_training_config(name, tmp_path, medrec_cli, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    copy = _show(medrec_cli, name, tmp_path / "my.yaml")
    recipe = load_train_recipe(copy, manifest=Path("work/index/manifest.csv"))

    config, source = recipe.config, yaml.safe_load(copy.read_text(encoding="utf-8"))
    assert config.data.manifest == tmp_path / "work" / "index" / "manifest.csv" and config.data.splits is None
    for section in TRAIN_SECTIONS:
        for key in source.get(section) or {}:
            assert getattr(getattr(config, section), key) is not None, f"{section}.{key} lost"
    assert config.split.val == source["split"]["val"] and config.model.name == source["model"]["name"]
    assert config.training.epochs == source["training"]["epochs"]
    assert "split (to make the splits)" in recipe.used and "data.manifest" in recipe.used
    assert {"index", "evaluation", "data.scans", "name"} <= set(recipe.ignored)
    assert "ignores name, description, data.scans" in recipe.describe()


def test_splits_given_the_split_section_only_chooses_the_fold(tmp_path, medrec_cli, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    copy = _show(medrec_cli, "ct_lesion_3d", tmp_path / "my.yaml")
    recipe = load_train_recipe(copy, manifest=Path("m.csv"), splits=Path("work/splits.csv"))
    assert recipe.config.data.splits == tmp_path / "work" / "splits.csv"
    assert "data.splits" in recipe.used and "split (fold, check_pixels)" in recipe.used


def test_manifest_in_the_recipe_is_relative_to_the_recipe(tmp_path) -> None:
    folder = tmp_path / "recipes"
    folder.mkdir()
    text = (packaged_recipes()[0].path.read_text(encoding="utf-8")
            .replace("data:\n", "data:\n  manifest: ../work/index/manifest.csv\n", 1))
    (folder / "mine.yaml").write_text(text, encoding="utf-8")
    assert load_train_recipe(folder / "mine.yaml").config.data.manifest == tmp_path / "work" / "index" / "manifest.csv"


def test_readme_example_recipe_is_the_packaged_one() -> None:
    text = README.read_text(encoding="utf-8")
    block = text.split("A complete recipe (`medrec recipes show ct_lesion_3d`", 1)[1].split("```yaml", 1)[1]
    documented = yaml.safe_load(block.split("```", 1)[0])
    packaged = next(r for r in packaged_recipes() if r.name == "ct_lesion_3d")
    assert documented == yaml.safe_load(packaged.path.read_text(encoding="utf-8"))


def test_unknown_key_is_one_line_naming_the_dotted_key(tmp_path, medrec_cli, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    copy = _show(medrec_cli, "ct_lesion_3d", tmp_path / "my.yaml")
    copy.write_text(copy.read_text(encoding="utf-8").replace("  epochs: 30", "  epoch: 30"), encoding="utf-8")
    code, _, err = medrec_cli("train", copy, "-o", "run", "--manifest", "m.csv")
    lines = _error_lines(err)
    assert code != 0 and len(lines) == 1, err
    assert "unknown key 'training.epoch' (did you mean 'epochs'?)" in lines[0]
    assert not (tmp_path / "run").exists()


def test_train_without_a_manifest_says_how_to_give_one(tmp_path, medrec_cli, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    copy = _show(medrec_cli, "ct_lesion_3d", tmp_path / "my.yaml")
    code, _, err = medrec_cli("train", copy, "-o", "run")
    lines = _error_lines(err)
    assert code != 0 and len(lines) == 1, err
    assert "--manifest" in lines[0] and "data.manifest" in lines[0] and "'medrec run" in lines[0]


def test_run_refuses_train_keys_in_one_line(tmp_path, medrec_cli, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    copy = _show(medrec_cli, "ct_lesion_3d", tmp_path / "my.yaml")
    copy.write_text(copy.read_text(encoding="utf-8").replace("data:\n", "data:\n  manifest: m.csv\n", 1),
                    encoding="utf-8")
    code, _, err = medrec_cli("run", copy, "-o", "run")
    lines = _error_lines(err)
    assert code != 0 and len(lines) == 1, err
    assert "data.manifest is for 'medrec train'" in lines[0] and "medrec train" in lines[0]
    assert not (tmp_path / "run").exists()


def test_readme_index_split_train_with_a_copied_recipe(tmp_path, medrec_cli, monkeypatch, readme_steps) -> None:
    """``recipes show > my_recipe.yaml``, ``index``, ``split``, ``train`` as the README writes them (1 short epoch)."""
    from medrec.synth import generate_cohort

    assert {"recipes", "index", "split", "train"} <= set(readme_steps.steps), readme_steps.steps
    show, index, split, train = (readme_steps.local(name, tmp_path) for name in ("recipes", "index", "split", "train"))
    scans = Path(index[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cohort = generate_cohort(tmp_path / "synth", kind="ct-lesion", patients=20, fmt="nifti", seed=3,
                                 image_size=32, slice_thickness=10.0, follow_up_fraction=0.0)
    scans.parent.mkdir(parents=True, exist_ok=True)
    cohort.out_dir.rename(scans)
    labels = tmp_path / index[index.index("--labels") + 1]
    (scans / "labels.csv").rename(labels)
    monkeypatch.chdir(tmp_path)

    assert show[:2] == ["recipes", "show"] and show[3] == ">"
    recipe = _show(medrec_cli, show[2], tmp_path / show[4])
    # The user edits the copy: here, one short epoch on the CPU (the README's recipe trains 30).
    text = recipe.read_text(encoding="utf-8").replace("  epochs: 30", "  epochs: 1\n  device: cpu")
    recipe.write_text(text.replace("voxel_budget: 24576", "voxel_budget: 4096"), encoding="utf-8")

    for words in (index, split):
        code, _, err = medrec_cli(*words)
        assert code == 0, err
    code, _, err = medrec_cli(*train)
    said = " ".join(err.split())
    assert code == 0, said
    assert ("uses data.manifest, data.splits, split (fold, check_pixels), preprocessing, model, training, "
            "threshold, calibration; ignores name, description, data.scans, data.labels, data.match_on, index, "
            "evaluation") in said

    run = tmp_path / train[train.index("-o") + 1]
    manifest, splits = (tmp_path / train[train.index(option) + 1] for option in ("--manifest", "--splits"))
    assert (run / "model.safetensors").is_file()
    resolved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    assert Path(resolved["data"]["manifest"]) == manifest
    assert resolved["model"]["name"] == "cnn_small" and resolved["training"]["epochs"] == 1
    assert "index" not in resolved and "evaluation" not in resolved
    written = pd.read_csv(run / "splits.csv", dtype=str).sort_values("sample_id").reset_index(drop=True)
    given = pd.read_csv(splits, dtype=str)[written.columns].sort_values("sample_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(written, given)
