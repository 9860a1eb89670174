"""``medrec index``: scan a folder of DICOM / NIfTI files into manifest.csv and qc.csv."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from medrec.commands import dicomweb_options
from medrec.console import print_summary


class MatchOn(StrEnum):
    """Key columns a labels file can be matched on."""

    patient_id = "patient_id"
    study_uid = "study_uid"
    accession = "accession"
    path = "path"


class Plane(StrEnum):
    """Preferred slice plane when choosing one series per study."""

    axial = "axial"
    coronal = "coronal"
    sagittal = "sagittal"
    any = "any"


def register(app: typer.Typer) -> None:
    """Add the ``index`` command to ``app``."""

    @app.command("index")
    def index_command(
        scans_arg: str = typer.Argument(..., metavar="SCANS",
                                        help="Folder of scans (any nesting, any file names), a single file, or "
                                             "dicomweb:URL (a PACS)."),
        out_dir: Path = typer.Option(..., "-o", "--out", help="Output folder for manifest.csv and qc.csv."),
        labels: Path | None = typer.Option(
            None, "--labels", help="CSV/TSV with a label column and a patient_id / study_uid / accession / path column."
        ),
        match_on: MatchOn | None = typer.Option(
            None, "--match-on", help="Labels key; default: the column that matches most samples."
        ),
        label_column: str = typer.Option("label", "--label-column", help="Name of the labels column."),
        lesions: Path | None = typer.Option(
            None, "--lesions",
            help="Lesion table (study_uid or series_uid, center_x/y/z LPS mm, diameter_mm); counted per sample.",
        ),
        workers: int | None = typer.Option(
            None, "--workers", min=1,
            help="Header-reading processes (default: serial below 8000 files or 3 cores, else one per core, "
                 "up to 8)."
        ),
        all_series: bool = typer.Option(False, "--all-series", help="Keep every eligible series, not one per study."),
        modality: list[str] = typer.Option(
            [], "--modality", help="Allowed modality (repeatable), e.g. --modality CT. Default: any."
        ),
        min_slices: int = typer.Option(1, "--min-slices", min=1, help="Fewest slices a selected sample needs."),
        min_slices_3d: int = typer.Option(
            5, "--min-slices-3d", min=2, help="Fewest slices for a multi-slice stack to count as a volume."
        ),
        orientation: Plane = typer.Option(Plane.axial, "--orientation", help="Preferred plane per study."),
        exclude_derived: bool = typer.Option(
            False, "--exclude-derived", help="Also exclude ImageType DERIVED / SECONDARY series."
        ),
        allow_missing_slices: bool = typer.Option(
            False, "--allow-missing-slices", help="Keep series with gaps (as a warning) instead of excluding them."
        ),
        exclude_gantry_tilt: bool = typer.Option(
            False, "--exclude-gantry-tilt", help="Exclude tilted stacks instead of keeping them with a warning."
        ),
        include: list[str] = typer.Option(
            [], "--include", help="Glob a file must match (name or relative path) to be read (repeatable)."
        ),
        exclude: list[str] = typer.Option([], "--exclude", help="Glob of files to leave out (repeatable)."),
        include_non_image: bool = typer.Option(
            False, "--include-non-image",
            help="Keep non-image objects (SEG, RTDOSE, RTSTRUCT, SR, PR, KO, ...) as samples, not in qc.csv.",
        ),
        nifti_value_check: bool = typer.Option(
            True, "--nifti-value-check/--no-nifti-value-check", help="Scan float NIfTI voxels for NaN / inf."
        ),
        study_uid: list[str] = dicomweb_options.STUDY_UID,
        patient_id: list[str] = dicomweb_options.PATIENT_ID,
        accession: list[str] = dicomweb_options.ACCESSION,
        since: str | None = dicomweb_options.SINCE,
        until: str | None = dicomweb_options.UNTIL,
        cache: Path | None = typer.Option(None, "--cache", metavar="DIR",
                                          help="dicomweb SCANS: where the fetched series are kept [OUT/dicomweb]."),
    ) -> None:
        """Index a scan folder: group DICOM files into series, pick one series per study, check quality.

        A PACS as SCANS: dicomweb:URL fetches the studies the filters select
        (QIDO-RS, then WADO-RS of their image series in the stored encoding) into
        --cache, then indexes it like a folder; series the server could not deliver
        whole are qc rows; series already in the cache are not fetched again.
        Credentials from MEDREC_DICOMWEB_TOKEN, or MEDREC_DICOMWEB_USER +
        MEDREC_DICOMWEB_PASSWORD, else ~/.netrc (never the command line); TLS
        certificates verified (MEDREC_DICOMWEB_CA_BUNDLE); MEDREC_DICOMWEB_TIMEOUT
        seconds per request (default 60).

        Writes OUT/manifest.csv (one row per sample) and OUT/qc.csv (every file left
        out, with the reason); pixels are never decoded. Non-image objects
        (segmentations, dose grids, structure sets, reports, presentation states)
        are left out unless --include-non-image is given. Problems that leave a
        series usable (slight spacing jitter, gantry tilt, missing preamble) are
        listed in the manifest's warnings column. The command always completes: bad
        files end up in qc.csv. Label rows that match no sample go to
        OUT/labels_unmatched.csv.

        Examples:

            medrec index scans/ -o index/

            medrec index scans/ --labels labels.csv --match-on study_uid -o index/

            medrec index export/ --modality CT --min-slices 20 --workers 8 -o index/

            medrec index BraTS2021/ --include '*_flair.nii.gz' --labels labels.csv -o index/

            medrec index ct/ --labels ct/labels.csv --lesions ct/ground_truth.csv -o index/
              (the manifest gains an annotation column; a mask column in the labels file counts too)

            medrec index dicomweb:https://pacs.example.org/dicom-web --modality CT --since 2026-11-01 -o index/
        """
        from medrec.index import SelectionRules, index_folder, print_index_summary

        rules = SelectionRules(
            modalities=tuple(modality),
            min_slices=min_slices,
            min_slices_3d=min_slices_3d,
            preferred_orientation=None if orientation is Plane.any else orientation.value,
            exclude_derived=exclude_derived,
            all_series=all_series,
            allow_missing_slices=allow_missing_slices,
            exclude_gantry_tilt=exclude_gantry_tilt,
            include=tuple(include),
            exclude=tuple(exclude),
            include_non_image=include_non_image,
        )
        options = {"labels": labels, "match_on": match_on.value if match_on is not None else None, "rules": rules,
                   "workers": workers, "label_column": label_column, "check_nifti_values": nifti_value_check,
                   "lesions": lesions}
        filters = dicomweb_options.filters_from(study_uid, patient_id, accession, modality, since, until, scans_arg)
        if filters is None:
            result = index_folder(Path(scans_arg), out_dir, **options)
            print_index_summary(result.summary)
            return
        from medrec.index.dicomweb import fetch_and_index

        result, fetched = fetch_and_index(scans_arg, out_dir, cache or out_dir / "dicomweb", filters, **options)
        print_index_summary(result.summary)
        print_summary("DICOMweb", [("server", fetched.url), ("studies matched", fetched.studies),
                                   ("series fetched", fetched.fetched), ("series already cached", fetched.cached),
                                   ("series not delivered (qc.csv)", fetched.describe()["series_failed"]),
                                   ("cache", fetched.cache)])
