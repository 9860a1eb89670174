"""``medrec synth`` on the command line."""

from __future__ import annotations

import pandas as pd
import pytest

from medrec.cli import main


def test_cli_writes_a_radiograph_cohort(tmp_path, capsys):
    out = tmp_path / "xr"
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", str(out), "--kind", "xr-nodule", "--patients", "3", "--format", "dicom", "--seed", "1",
              "--image-size", "64"])
    assert exit_info.value.code in (0, None)
    labels = pd.read_csv(out / "labels.csv")
    assert labels.patient_id.nunique() == 3
    assert len(list(out.rglob("*.dcm"))) == len(labels)
    assert (out / "ground_truth.csv").exists() and (out / "synth.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--patients", "0"], "patients"),
        (["--kind", "ct-lesoin"], "did you mean 'ct-lesion'"),
        (["--format", "nii"], "nifti"),
        (["--lesion-diameter", "10"], "LO,HI"),
        (["--prevalence", "2"], "prevalence"),
    ],
)
def test_cli_bad_values_exit_with_one_line(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", str(tmp_path / "out"), *args])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.strip()]) <= 2


def test_cli_refuses_to_overwrite_a_cohort(tmp_path, capsys):
    args = ["synth", str(tmp_path), "--kind", "xr-nodule", "--patients", "1", "--image-size", "32"]
    with pytest.raises(SystemExit) as first:
        main(args)
    assert first.value.code in (0, None)
    with pytest.raises(SystemExit) as second:
        main(args)
    assert second.value.code != 0 and "--overwrite" in capsys.readouterr().err
