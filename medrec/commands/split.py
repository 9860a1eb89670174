"""``medrec split``: patient-level stratified splits with a leakage audit."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``split`` command to ``app``."""

    @app.command("split")
    def split_command(
        manifest: Path = typer.Argument(..., metavar="MANIFEST", help="manifest.csv written by 'medrec index'."),
        output: Path | None = typer.Option(
            None, "-o", "--output", help="splits.csv to write or reuse (default: splits.csv beside the manifest)."),
        val: float = typer.Option(0.15, "--val", min=0.0, max=0.95, help="Fraction of patients for validation."),
        test: float | None = typer.Option(
            None, "--test", min=0.0, max=0.95,
            help="Fraction of patients held out for testing (default 0.2; with --folds default 0)."),
        folds: int | None = typer.Option(
            None, "--folds", min=2, help="k-fold cross-validation (fold_0..fold_k-1) instead of train/val."),
        stratify_by: list[str] = typer.Option(
            [], "--stratify-by", help="Manifest column to stratify on besides the label (repeatable)."),
        seed: int = typer.Option(0, "--seed", help="Split seed; the same seed gives the same splits."),
        label_column: str = typer.Option("label", "--label-column", help="Manifest column holding the labels."),
        no_pixel_check: bool = typer.Option(
            False, "--no-pixel-check", help="Skip decoding every sample to find identical images across splits."),
        workers: int | None = typer.Option(
            None, "--workers", min=1, help="Processes for the pixel check (default: up to 2)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing splits file."),
    ) -> None:
        """Split the labelled samples by patient (hold-out or k-fold), stratified by label, after a leakage audit.

        All samples of a patient (and of patients sharing a study UID) go to one
        partition. Samples without a label are left out and counted. Hold-out
        fractions are met approximately, in patients.

        Before anything is written, the audit refuses a patient in two partitions, a
        study filed under patient ids in two partitions, or identical pixel content
        in two partitions. An existing splits file is reused when it matches the
        manifest, and replaced only with --overwrite.

        Examples:

            medrec split data/index/manifest.csv -o data/splits.csv

            medrec split data/index/manifest.csv -o splits.csv --val 0.15 --test 0.2 --stratify-by manufacturer

            medrec split data/index/manifest.csv -o splits_cv.csv --folds 5 --seed 1 --no-pixel-check
        """
        from rich.markup import escape

        from medrec.console import console, print_summary, progress
        from medrec.errors import LabelsError
        from medrec.labels import distinct_labels, positive_labels
        from medrec.manifest import read_manifest
        from medrec.split import ensure_splits

        table = read_manifest(manifest)
        target = output if output is not None else manifest.parent / "splits.csv"
        test_fraction = test if test is not None else (0.0 if folds is not None else 0.2)
        labelled = int((table[label_column].astype(str).str.strip() != "").sum()) if label_column in table else 0
        check_pixels = not no_pixel_check
        with progress(transient=True) as bar:
            task = bar.add_task("Pixel check", total=labelled if check_pixels else 0, status="",
                                visible=check_pixels)
            result = ensure_splits(
                table, target, val=val, test=test_fraction, folds=folds, stratify_by=stratify_by or None,
                seed=seed, label_column=label_column, overwrite=overwrite, check_pixels=check_pixels,
                workers=workers, on_hashed=lambda _sample: bar.advance(task),
            )
        if result.unlabelled:
            console.print(f"{len(result.unlabelled)} sample(s) without a label left out of the splits "
                          f"(e.g. {', '.join(result.unlabelled[:3])})")
        if result.audit.unreadable:
            first = next(iter(result.audit.unreadable.items()))
            console.print(f"[yellow]warning:[/] pixel check could not decode {len(result.audit.unreadable)} "
                          f"sample(s); they were not compared (e.g. {first[0]}: {first[1]})", soft_wrap=True)
        classes = distinct_labels(table[label_column].astype(str)) if label_column in table else []
        if len(classes) > 2:  # no positive class: the summary counts each class
            labels_text = f"{len(classes)} classes, samples per class"
        else:
            try:
                labels_text = "positive = " + (", ".join(sorted(positive_labels(table[label_column].astype(str))))
                                               or "-")
            except LabelsError as e:
                labels_text = "positive = undecided"
                console.print(f"[yellow]note:[/] {escape(str(e))}", soft_wrap=True)
        rows = [tuple(record.values()) for record in result.summary.to_dict(orient="records")]
        pixel_note = "pixel check on" if check_pixels else "pixel check off"
        print_summary(
            f"medrec split: {'reused' if result.reused else 'wrote'} {target} (leakage audit passed, {pixel_note}; "
            f"{labels_text})",
            rows,
            tuple(str(column).replace("positive_fraction", "positive fraction") for column in result.summary.columns),
        )
