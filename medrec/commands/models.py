"""``medrec models``: list the registered networks with their families, dimensions and sizes."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table


def _millions(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} M"


def register(app: typer.Typer) -> None:
    """Add the ``models`` command to ``app``."""

    @app.command("models")
    def models_command(
        as_json: bool = typer.Option(False, "--json", help="Print the list as JSON (for scripts) instead of a table."),
    ) -> None:
        """List the models a recipe can name under model.name.

        Parameters are for in_channels=1, num_classes=2.
        Every model works in 2D, in 3D, and slice-wise on volumes (model.mode 2d / 2.5d).

        Examples:

            medrec models

            medrec models --json > models.json
        """
        from medrec.models import list_models

        infos = list_models()
        if as_json:
            typer.echo(json.dumps([info.__dict__ | {"supports": list(info.supports)} for info in infos], indent=2))
            return
        table = Table(
            title=f"{len(infos)} models (parameters for 1 input channel, 2 classes)",
            title_justify="left",
            header_style="bold",
        )
        # Every cell but the name (kept whole, to be copied into a recipe) wraps, and folds a word longer
        # than its column: on a narrow terminal (or a pipe, 80 columns) the table grows taller, and
        # no text is cut off with an ellipsis.
        table.add_column("name", no_wrap=True, min_width=max((len(info.name) for info in infos), default=4))
        table.add_column("family", overflow="fold")
        table.add_column("dims", overflow="fold")
        table.add_column("params 2D", justify="right", overflow="fold")
        table.add_column("params 3D", justify="right", overflow="fold")
        table.add_column("description", overflow="fold")
        for info in infos:
            table.add_row(
                info.name,
                info.family,
                "/".join(f"{d}D" for d in info.supports),
                _millions(info.params_m_2d),
                _millions(info.params_m_3d),
                info.description,
            )
        # The list is the command's output: stdout, so that it can be piped.
        Console(highlight=False).print(table)
