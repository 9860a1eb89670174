"""Render a report :class:`~medrec.report.document.Document` as one self-contained HTML file.

Self-contained means: the CSS is inline, every image is a ``data:image/png;base64`` URI and the
page references nothing outside itself (no scripts, fonts, style sheets or links), so it opens
the same offline, in an e-mail attachment or in an archive years later. A print style sheet
lays it out on A4.
"""

from __future__ import annotations

import base64
from importlib import resources

import jinja2

from medrec import __version__
from medrec.report.document import Document, subtitle


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _environment() -> jinja2.Environment:
    templates = resources.files("medrec.report") / "templates"
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: (templates / name).read_text(encoding="utf-8")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["data_uri"] = _data_uri
    return env


def render_html(document: Document) -> str:
    """The report as an HTML string (UTF-8 text, no external references).

    Args:
        document: the composed report.

    Returns:
        The complete HTML page.
    """
    env = _environment()
    css = (resources.files("medrec.report") / "templates" / "report.css").read_text(encoding="utf-8")
    key_figures = [{"name": n, "value": v, "ci": c} for n, v, c in document.key_figures]
    return env.get_template("report.html.j2").render(
        doc=document, css=css, version=__version__, key_figures=key_figures, subtitle=subtitle(document)
    )
