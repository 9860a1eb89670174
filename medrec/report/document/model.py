"""The document model: sections of paragraphs, callouts, lists, tables and figures.

The HTML and the PDF renderers both walk the same :class:`Document`, so the two files say the
same thing in the same order. The blocks hold text that is already formatted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

# A number as this module formats it: 12, 1,234, 0.875, 87.5%, +3.1 points, <0.001, 14/16, 80.0-92.0%,
# optionally followed by "(95% CI ...)".
_NUMERIC_CELL = re.compile(
    r"^(?:[<>]?[-+\u2212]?\d[\d,]*(?:\.\d+)?(?:%| points)?(?: \([^)]*\))?"
    r"|\d[\d.]*\u2013\d[\d.]*%?|\d+ ?/ ?\d+)$"
)


@dataclass
class Paragraph:
    text: str
    kind: str = "paragraph"


@dataclass
class Callout:
    """A boxed message; ``level`` is ``warning`` (exploratory threshold, leakage) or ``note``."""

    text: str
    level: str = "note"
    kind: str = "callout"


@dataclass
class BulletList:
    items: list[str]
    kind: str = "list"


@dataclass
class Table:
    """A table of already formatted strings; the first column is a row header."""

    columns: list[str]
    rows: list[list[str]]
    caption: str = ""
    note: str = ""
    strong_rows: frozenset[int] = frozenset()  # rows drawn bold (totals, the analysed set)
    muted_rows: frozenset[int] = frozenset()  # rows drawn grey (small subgroups)
    kind: str = "table"

    @property
    def numeric_columns(self) -> list[bool]:
        """Per column: True when every filled cell is a number (such columns are right-aligned)."""
        flags = []
        for index in range(len(self.columns)):
            cells = [row[index] for row in self.rows if index < len(row) and row[index] not in ("", "n/a")]
            flags.append(index > 0 and bool(cells) and all(_NUMERIC_CELL.match(c) for c in cells))
        return flags


@dataclass
class Figure:
    """One PNG; ``name`` is its file name under ``figures/``; ``width`` is a fraction of the page."""

    name: str
    png: bytes
    caption: str
    width: float = 0.75
    kind: str = "figure"


@dataclass
class FigureRow:
    """Figures of equal rank side by side (the ROC and precision-recall curves)."""

    figures: list[Figure]
    kind: str = "figrow"


@dataclass
class Gallery:
    """Small figures side by side (the failure-analysis thumbnails)."""

    figures: list[Figure]
    caption: str = ""
    kind: str = "gallery"


@dataclass
class Case:
    """A flagged case of the failure analysis (identifiers already pseudonymised when required)."""

    label: str  # "FN 1", "FP 2"
    sample_id: str
    patient_id: str
    score: float | None
    reference: str
    picture_note: str  # which slice the picture shows and what is marked on it, or why there is none
    figure: Figure | None = None
    # the patient's other analysed rows: (sample id, score, reference label); None when not looked up
    other_studies: tuple[tuple[str, float | None, str], ...] | None = None


Block = Paragraph | Callout | BulletList | Table | Figure | FigureRow | Gallery


@dataclass
class Section:
    key: str
    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Document:
    title: str
    date: str
    summary: str
    banner: str | None
    sections: list[Section]
    footer: str
    key_figures: list[tuple[str, str, str]] = field(default_factory=list)  # (name, value, 95% CI)
    alert: str | None = None  # the red banner above everything else (synthetic data)

    def texts(self) -> Iterable[str]:
        """Every string the renderers will print (used to check for identifiers before writing)."""
        yield from (self.title, self.date, self.summary, self.banner or "", self.alert or "", self.footer)
        for figure in self.key_figures:
            yield from figure
        for section in self.sections:
            yield section.title
            for block in section.blocks:
                yield from _block_texts(block)


def _block_texts(block: Block) -> Iterable[str]:
    if isinstance(block, Paragraph | Callout):
        yield block.text
    elif isinstance(block, BulletList):
        yield from block.items
    elif isinstance(block, Table):
        yield from (block.caption, block.note, *block.columns)
        for row in block.rows:
            yield from row
    elif isinstance(block, Figure):
        yield from (block.name, block.caption)
    elif isinstance(block, Gallery | FigureRow):
        yield getattr(block, "caption", "")
        for figure in block.figures:
            yield from (figure.name, figure.caption)
