"""``medrec recipes``: list the packaged recipes; ``medrec recipes show NAME`` prints one to copy and edit."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table


def register(app: typer.Typer) -> None:
    """Add the ``recipes`` command group (``recipes``, ``recipes show NAME``) to ``app``."""
    recipes_app = typer.Typer(name="recipes", add_completion=False,
                              context_settings={"help_option_names": ["-h", "--help"]})

    @recipes_app.callback(invoke_without_command=True)
    def recipes_command(context: typer.Context) -> None:
        """List the recipes that ship with medrec, by the name that 'medrec run NAME' takes.

        A recipe is one complete workflow (index, split, train, evaluate). Run one
        by name with your data (--scans / --labels; otherwise its relative data
        paths, such as data/ct, are taken from the current folder), or print it with
        'medrec recipes show NAME > my.yaml', edit the copy and run that file.

        Examples:

            medrec recipes

            medrec recipes show ct_lesion_annotated > my_recipe.yaml

            medrec run ct_lesion_annotated --scans data/ct --labels data/ct/labels.csv \\
                --lesions data/ct/ground_truth.csv
        """
        if context.invoked_subcommand is not None:
            return
        from medrec.workflow import packaged_recipes

        recipes = packaged_recipes()
        table = Table(title=f"{len(recipes)} packaged recipes (medrec run NAME, medrec recipes show NAME)",
                      title_justify="left", header_style="bold")
        table.add_column("name", no_wrap=True)
        table.add_column("description")
        for recipe in recipes:
            table.add_row(recipe.name, recipe.description)
        # The list is the command's output: stdout, so that it can be piped.
        Console(highlight=False).print(table)

    @recipes_app.command("show")
    def show_command(
        name: str = typer.Argument(..., metavar="NAME", help="A packaged recipe (see 'medrec recipes')."),
    ) -> None:
        """Print a packaged recipe, comments included, to stdout: redirect it to a file to edit a copy.

        Relative paths in the copy are taken from the copy's folder, so a copy saved
        in the current folder reads its data from where 'medrec run NAME' would.

        Examples:

            medrec recipes show ct_lesion_3d > my_recipe.yaml

            medrec run my_recipe.yaml -o runs/mine
        """
        from medrec.workflow import packaged_recipe

        typer.echo(packaged_recipe(name).path.read_text(encoding="utf-8"), nl=False)

    app.add_typer(recipes_app, name="recipes")
