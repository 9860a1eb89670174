"""Terminal output shared by every command: one rich console, progress bars, summary tables."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

# Progress and messages go to stderr so that stdout stays clean for piping.
console = Console(stderr=True, highlight=False)


def progress(transient: bool = False) -> Progress:
    """A progress bar in the house style (description, bar, n/m, elapsed, remaining)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        transient=transient,
        disable=not console.is_terminal and console.quiet,
    )


class _NoProgress:
    """Stands in for a ``Progress`` where no bars are shown (other ranks, ``show_progress=False``)."""

    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def update(self, *args: Any, **kwargs: Any) -> None:
        return None

    def advance(self, *args: Any, **kwargs: Any) -> None:
        return None


def progress_bars(show: bool) -> contextlib.AbstractContextManager:
    """:func:`progress` when ``show``, else a context giving an object that accepts the same calls."""
    return progress() if show else contextlib.nullcontext(_NoProgress())


def summary_table(title: str, rows: Iterable[Sequence[object]], columns: Sequence[str] = ("item", "value")) -> Table:
    """Build a two-or-more column table; print it with ``console.print(table)``."""
    table = Table(title=title, title_justify="left", header_style="bold")
    for index, name in enumerate(columns):
        table.add_column(name, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    return table


def print_summary(title: str, rows: Iterable[Sequence[object]], columns: Sequence[str] = ("item", "value")) -> None:
    """Print a summary table to the console."""
    console.print(summary_table(title, rows, columns))
