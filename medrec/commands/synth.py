"""``medrec synth``: write a synthetic phantom cohort (DICOM or NIfTI) plus labels.csv."""

from __future__ import annotations

from pathlib import Path

import typer

from medrec.errors import ConfigError


def parse_range(text: str | None, option: str) -> tuple[float, float] | None:
    """Parse ``LO,HI`` into two floats (None stays None)."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        if len(parts) != 2:
            raise ValueError
        return float(parts[0]), float(parts[1])
    except ValueError as e:
        raise ConfigError(f"{option}: expected two numbers LO,HI (e.g. 10,30), got {text!r}") from e


def _size(n_bytes: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n_bytes < 1024 or unit == "GiB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return str(n_bytes)


def register(app: typer.Typer) -> None:
    """Add the ``synth`` command to ``app``."""

    @app.command("synth")
    def synth_command(
        out_dir: Path = typer.Argument(..., help="Output folder for the cohort, labels.csv and ground_truth.csv."),
        kind: str = typer.Option("ct-lesion", "--kind", help="ct-lesion | mri-tumor | xr-nodule."),
        patients: int = typer.Option(40, "--patients", help="Number of patients (>= 1)."),
        fmt: str = typer.Option(
            "dicom", "--format", help="dicom (one file per slice) | nifti (one .nii.gz per study)."),
        seed: int = typer.Option(0, "--seed", help="Random seed; the same seed writes byte-identical files."),
        quirks: bool = typer.Option(
            False, "--quirks", help="DICOM like real exports: localizers, opaque names, shuffled order, shared folders."
        ),
        prevalence: float = typer.Option(0.5, "--prevalence", help="Fraction of positive patients."),
        lesion_diameter: str | None = typer.Option(
            None, "--lesion-diameter", help="LO,HI lesion diameter in mm (default CT 18,40; MR 12,36; XR 10,30)."
        ),
        contrast: str | None = typer.Option(
            None, "--contrast",
            help="LO,HI lesion contrast: HU for CT (10,60); relative for MR (0.06,0.5) / XR (0.12,0.4).",
        ),
        noise: float = typer.Option(1.0, "--noise", help="Noise multiplier (0: noise-free)."),
        image_size: int | None = typer.Option(
            None, "--image-size", help="In-plane matrix (default 128 for CT / MR, 256 for XR)."
        ),
        slice_thickness: float | None = typer.Option(
            None, "--slice-thickness", help="Slice thickness in mm (default: the scanner's, 3.75-5)."
        ),
        follow_up_fraction: float = typer.Option(
            0.2, "--follow-up-fraction", help="Fraction of patients with a second, later study."
        ),
        masks: bool = typer.Option(
            False, "--masks", help="Also write lesion masks (masks/*.nii.gz) and a mask column in labels.csv."
        ),
        overwrite: bool = typer.Option(False, "--overwrite", help="Write into a folder that already holds a cohort."),
    ) -> None:
        """Write a synthetic phantom cohort with labels.csv and ground_truth.csv.

        Kinds: ct-lesion (abdominal CT in HU, 1-3 hypo- or hyperdense liver lesions
        in positives), mri-tumor (brain MR, a tumor with enhancing rim, necrotic
        core and edema), xr-nodule (PA chest radiograph, a lung nodule). Scanners
        from several manufacturers differ in noise, pixel spacing, slice thickness
        and intensity scaling. See datasets/synthetic_phantoms.md for every knob and
        quirk.

        Examples:

            medrec synth phantoms/ --kind ct-lesion --patients 40 --format dicom --seed 0

            medrec synth mr/ --kind mri-tumor --patients 60 --format nifti --seed 1 --contrast 0.1,0.4

            medrec synth export/ --kind xr-nodule --patients 20 --quirks --noise 1.5

            medrec synth ct/ --kind ct-lesion --patients 200 --format nifti --masks   (labels.csv gets a mask column)
        """
        from medrec.console import console, print_summary
        from medrec.synth import generate_cohort

        cohort = generate_cohort(
            out_dir,
            kind=kind,
            patients=patients,
            fmt=fmt,
            seed=seed,
            quirks=quirks,
            prevalence=prevalence,
            lesion_diameter_mm=parse_range(lesion_diameter, "--lesion-diameter"),
            contrast=parse_range(contrast, "--contrast"),
            noise=noise,
            image_size=image_size,
            slice_thickness=slice_thickness,
            follow_up_fraction=follow_up_fraction,
            masks=masks,
            overwrite=overwrite,
            progress=True,
        )
        s = cohort.summary
        manufacturers = ", ".join(f"{name} {count}" for name, count in s["manufacturers"].items())
        print_summary(
            f"Synthetic cohort: {s['kind']} ({s['format']}{', quirks' if quirks else ''})",
            [
                ("patients", s["patients"]),
                ("studies", s["studies"]),
                ("positive patients", s["positive_patients"]),
                ("positive studies", s["positive_studies"]),
                ("lesions", s["lesions"]),
                *([("lesion masks", s["masks"])] if masks else []),
                ("manufacturers (studies)", manufacturers),
                ("files written", s["files_written"]),
                ("size on disk", _size(s["bytes_on_disk"])),
                ("labels", str(cohort.labels_csv)),
            ],
        )
        console.print(f"Next: medrec index {out_dir} --labels {cohort.labels_csv} -o INDEX_DIR")
