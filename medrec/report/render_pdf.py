"""Render a report :class:`~medrec.report.document.Document` as a paginated A4 PDF (reportlab platypus).

The PDF walks the same document as the HTML, so both say the same thing. Text is set in DejaVu
Sans (shipped with matplotlib, so the figures and the text match and any Unicode subgroup name
prints); tables repeat their header row across pages; every page has a footer with the report
title, date and "page n of N". The file is written in reportlab's invariant mode (fixed document
id) with the report date as its creation and modification date, so the same document gives the
same bytes.
"""

from __future__ import annotations

import calendar
import datetime
import io
import time
from pathlib import Path
from xml.sax.saxutils import escape

import matplotlib
from reportlab.lib import colors
from reportlab.lib.enums import TA_LEFT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.pdfdoc import TimeStamp
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas as pdfcanvas
from reportlab.platypus import (
    CondPageBreak,
    Image,
    KeepTogether,
    ListFlowable,
    ListItem,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from medrec import __version__
from medrec.report import document as doc_model

INK = colors.HexColor("#1d232b")
MUTED = colors.HexColor("#5b6470")
RULE = colors.HexColor("#d5dae0")
BAND = colors.HexColor("#f4f6f8")
ACCENT = colors.HexColor("#0072B2")
WARN_BG = colors.HexColor("#fff4e0")
WARN_INK = colors.HexColor("#8a4b00")
WARN_RULE = colors.HexColor("#D55E00")
ALERT_BG = colors.HexColor("#fde8e8")
ALERT_INK = colors.HexColor("#9b1c1c")
ALERT_RULE = colors.HexColor("#c81e1e")

MARGIN_X = 16 * mm
MARGIN_TOP = 16 * mm
MARGIN_BOTTOM = 18 * mm


def _register_fonts() -> tuple[str, str, str]:
    """Register DejaVu Sans (regular, bold, oblique) once; fall back to Helvetica if it is absent."""
    if "MedrecSans" in pdfmetrics.getRegisteredFontNames():
        return "MedrecSans", "MedrecSans-Bold", "MedrecSans-Oblique"
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    files = {
        "MedrecSans": "DejaVuSans.ttf",
        "MedrecSans-Bold": "DejaVuSans-Bold.ttf",
        "MedrecSans-Oblique": "DejaVuSans-Oblique.ttf",
        "MedrecSans-BoldOblique": "DejaVuSans-BoldOblique.ttf",
    }
    if not all((folder / name).is_file() for name in files.values()):
        return "Helvetica", "Helvetica-Bold", "Helvetica-Oblique"
    for font_name, file_name in files.items():
        pdfmetrics.registerFont(TTFont(font_name, str(folder / file_name)))
    pdfmetrics.registerFontFamily("MedrecSans", normal="MedrecSans", bold="MedrecSans-Bold",
                                  italic="MedrecSans-Oblique", boldItalic="MedrecSans-BoldOblique")
    return "MedrecSans", "MedrecSans-Bold", "MedrecSans-Oblique"


def _styles() -> dict[str, ParagraphStyle]:
    regular, bold, italic = _register_fonts()
    base = ParagraphStyle("base", fontName=regular, fontSize=9, leading=12.2, textColor=INK, alignment=TA_LEFT)
    return {
        "body": base,
        "title": ParagraphStyle("title", base, fontName=bold, fontSize=18, leading=22, spaceAfter=2),
        "meta": ParagraphStyle("meta", base, fontSize=8.5, textColor=MUTED, spaceAfter=6),
        "h2": ParagraphStyle("h2", base, fontName=bold, fontSize=12.5, leading=16, spaceBefore=10, spaceAfter=5,
                             textColor=INK),
        "caption": ParagraphStyle("caption", base, fontName=bold, fontSize=8.5, leading=11, spaceBefore=2,
                                  spaceAfter=3),
        "figcaption": ParagraphStyle("figcaption", base, fontSize=7.8, leading=10, textColor=MUTED, spaceAfter=8),
        "note": ParagraphStyle("note", base, fontSize=7.6, leading=10, textColor=MUTED, spaceAfter=6),
        "cell": ParagraphStyle("cell", base, fontSize=7.8, leading=9.8),
        "cell_right": ParagraphStyle("cell_right", base, fontSize=7.8, leading=9.8, alignment=2),
        "cell_head": ParagraphStyle("cell_head", base, fontName=bold, fontSize=7.8, leading=9.8),
        "cell_strong": ParagraphStyle("cell_strong", base, fontName=bold, fontSize=7.8, leading=9.8),
        "cell_strong_right": ParagraphStyle("cell_strong_right", base, fontName=bold, fontSize=7.8, leading=9.8,
                                            alignment=2),
        "cell_muted": ParagraphStyle("cell_muted", base, fontName=italic, fontSize=7.8, leading=9.8,
                                     textColor=colors.HexColor("#8a929b")),
        "cell_muted_right": ParagraphStyle("cell_muted_right", base, fontName=italic, fontSize=7.8, leading=9.8,
                                           textColor=colors.HexColor("#8a929b"), alignment=2),
        "banner": ParagraphStyle("banner", base, fontName=bold, fontSize=9.5, leading=12.5, textColor=WARN_INK),
        "alert": ParagraphStyle("alert", base, fontName=bold, fontSize=10, leading=13, textColor=ALERT_INK),
        "summary": ParagraphStyle("summary", base, fontSize=9.2, leading=12.8),
        "key_name": ParagraphStyle("key_name", base, fontSize=6.8, leading=8.5, textColor=MUTED),
        "key_value": ParagraphStyle("key_value", base, fontName=bold, fontSize=13, leading=16),
        "key_ci": ParagraphStyle("key_ci", base, fontSize=6.8, leading=8.5, textColor=MUTED),
        "footer": ParagraphStyle("footer", base, fontSize=7.2, textColor=MUTED),
    }


def _text(value: str) -> str:
    return escape(str(value))


class _NumberedCanvas(pdfcanvas.Canvas):
    """A canvas that knows the page count when drawing footers ("page n of N")."""

    footer_text = ""
    footer_font = "Helvetica"
    report_date = ""  # ISO date: the PDF's creation and modification dates (midnight UTC)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._saved_pages: list[dict] = []
        try:
            day = datetime.date.fromisoformat(self.report_date)
        except ValueError:
            return  # reportlab's invariant date stays
        stamp = TimeStamp(invariant=True)
        stamp.t = calendar.timegm(day.timetuple())
        stamp.lt = time.gmtime(stamp.t)
        stamp.YMDhms = tuple(stamp.lt)[:6]
        self._doc._timeStamp = stamp

    def showPage(self) -> None:  # reportlab's name
        self._saved_pages.append(dict(self.__dict__))
        self._startPage()

    def save(self) -> None:
        total = len(self._saved_pages)
        for state in self._saved_pages:
            self.__dict__.update(state)
            self._draw_footer(total)
            super().showPage()
        super().save()

    def _draw_footer(self, total: int) -> None:
        width, _ = self._pagesize
        self.saveState()
        self.setStrokeColor(RULE)
        self.setLineWidth(0.5)
        self.line(MARGIN_X, 12 * mm, width - MARGIN_X, 12 * mm)
        self.setFont(self.footer_font, 7.2)
        self.setFillColor(MUTED)
        self.drawString(MARGIN_X, 8 * mm, self.footer_text)
        self.drawRightString(width - MARGIN_X, 8 * mm, f"page {self._pageNumber} of {total}")
        self.restoreState()


def _column_widths(block: doc_model.Table, styles: dict[str, ParagraphStyle], width: float) -> list[float]:
    """Column widths from the text they hold (the automatic table layout of web browsers).

    Each column has a natural width (its longest cell on one line) and a minimum width (its
    longest word). When the natural widths fit, the spare room goes to the text columns; when
    they do not, every column gets its minimum plus a share of the remaining room in proportion
    to how much it would like to grow.
    """
    padding = 9.0
    size = styles["cell"].fontSize
    bold = styles["cell_head"].fontName
    numeric = block.numeric_columns
    natural, minimum = [], []
    for index, column in enumerate(block.columns):
        cells = [str(row[index]) for row in block.rows if index < len(row)]
        # Measured in bold: bold and italic rows are wider than regular ones and must not wrap either.
        longest = max([pdfmetrics.stringWidth(c, bold, size) for c in cells] or [0.0])
        words = [w for c in cells for w in c.split()] + str(column).split()
        widest_word = max([pdfmetrics.stringWidth(w, bold, size) for w in words] or [0.0])
        header = pdfmetrics.stringWidth(str(column), bold, size)
        natural.append(min(max(longest, header if header < width / 6 else widest_word) + padding, width * 0.6))
        minimum.append(min(widest_word + padding, width * 0.3))
    natural = [max(n, m) for n, m in zip(natural, minimum, strict=True)]
    if sum(natural) <= width:
        growing = [i for i, flag in enumerate(numeric) if not flag] or list(range(len(natural)))
        spare = width - sum(natural)
        weight = sum(natural[i] for i in growing)
        return [n + (spare * n / weight if i in growing else 0.0) for i, n in enumerate(natural)]
    if sum(minimum) >= width:
        return [width * m / sum(minimum) for m in minimum]
    spare = width - sum(minimum)
    wish = sum(n - m for n, m in zip(natural, minimum, strict=True))
    return [m + spare * (n - m) / wish for n, m in zip(natural, minimum, strict=True)]


def _table(block: doc_model.Table, styles: dict[str, ParagraphStyle], width: float) -> list:
    numeric = block.numeric_columns
    head_right = ParagraphStyle("cell_head_right", styles["cell_head"], alignment=2)
    data = [[Paragraph(_text(c), head_right if numeric[i] else styles["cell_head"])
             for i, c in enumerate(block.columns)]]
    for index, row in enumerate(block.rows):
        if index in block.strong_rows:
            left, right = styles["cell_strong"], styles["cell_strong_right"]
        elif index in block.muted_rows:
            left, right = styles["cell_muted"], styles["cell_muted_right"]
        else:
            left, right = styles["cell"], styles["cell_right"]
        data.append([Paragraph(_text(cell), right if c < len(numeric) and numeric[c] else left)
                     for c, cell in enumerate(row)])
    table = Table(data, colWidths=_column_widths(block, styles, width), repeatRows=1, hAlign="LEFT")
    table.setStyle(TableStyle([
        ("BACKGROUND", (0, 0), (-1, 0), BAND),
        ("LINEBELOW", (0, 0), (-1, 0), 1.0, colors.HexColor("#aeb6bf")),
        ("LINEBELOW", (0, 1), (-1, -1), 0.4, RULE),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("TOPPADDING", (0, 0), (-1, -1), 2.2),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 2.2),
        ("LEFTPADDING", (0, 0), (-1, -1), 4),
        ("RIGHTPADDING", (0, 0), (-1, -1), 4),
    ]))
    flowables = []
    if block.caption:
        flowables.append(Paragraph(_text(block.caption), styles["caption"]))
    flowables.append(table)
    if block.note:
        flowables.append(Spacer(1, 2))
        flowables.append(Paragraph(_text(block.note).replace("\n", "<br/>"), styles["note"]))
    else:
        flowables.append(Spacer(1, 6))
    # Short tables stay in one piece with their caption; long ones may break (the header repeats).
    return [KeepTogether(flowables)] if len(block.rows) <= 25 else flowables


def _image(png: bytes, max_width: float, max_height: float) -> Image:
    reader = ImageReader(io.BytesIO(png))
    pixel_width, pixel_height = reader.getSize()
    scale = min(max_width / pixel_width, max_height / pixel_height)
    return Image(io.BytesIO(png), width=pixel_width * scale, height=pixel_height * scale)


def _figure(block: doc_model.Figure, styles: dict[str, ParagraphStyle], width: float, height: float) -> list:
    image = _image(block.png, width * block.width, height * 0.62)
    return [KeepTogether([image, Spacer(1, 3), Paragraph(_text(block.caption), styles["figcaption"])])]


def _figure_row(block: doc_model.FigureRow, styles: dict[str, ParagraphStyle], width: float,
                height: float) -> list:
    cell_width = width / len(block.figures)
    cells = [[_image(f.png, cell_width - 10, height * 0.45), Spacer(1, 3), Paragraph(_text(f.caption),
                                                                                     styles["figcaption"])]
             for f in block.figures]
    row = Table([cells], colWidths=[cell_width] * len(cells), hAlign="LEFT")
    row.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("ALIGN", (0, 0), (-1, -1), "CENTER"),
                             ("LEFTPADDING", (0, 0), (-1, -1), 3), ("RIGHTPADDING", (0, 0), (-1, -1), 3)]))
    return [row, Spacer(1, 4)]


def _gallery(block: doc_model.Gallery, styles: dict[str, ParagraphStyle], width: float) -> list:
    per_row = 4
    cell_width = width / per_row
    cells = []
    for figure in block.figures:
        cells.append([_image(figure.png, cell_width - 8, 60 * mm),
                      Paragraph(_text(figure.caption), styles["figcaption"])])
    rows = [cells[i: i + per_row] for i in range(0, len(cells), per_row)]
    rows[-1] = rows[-1] + [""] * (per_row - len(rows[-1]))
    grid = Table(rows, colWidths=[cell_width] * per_row, hAlign="LEFT")
    grid.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("ALIGN", (0, 0), (-1, -1), "CENTER")]))
    flowables = [Paragraph(_text(block.caption), styles["caption"])] if block.caption else []
    return [KeepTogether([*flowables, grid, Spacer(1, 6)])]


def _boxed(content: list, background, border, width: float, border_width: float = 0.8) -> Table:
    box = Table([[content]], colWidths=[width])
    box.setStyle(TableStyle([
        ("BACKGROUND", (0, 0), (-1, -1), background),
        ("BOX", (0, 0), (-1, -1), border_width, border),
        ("LEFTPADDING", (0, 0), (-1, -1), 8),
        ("RIGHTPADDING", (0, 0), (-1, -1), 8),
        ("TOPPADDING", (0, 0), (-1, -1), 6),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 6),
    ]))
    return box


def _key_figures(document: doc_model.Document, styles: dict[str, ParagraphStyle], width: float) -> Table:
    cells = [[Paragraph(_text(name.upper()), styles["key_name"]), Paragraph(_text(value), styles["key_value"]),
              Paragraph(_text(f"95% CI {ci}"), styles["key_ci"])] for name, value, ci in document.key_figures]
    grid = Table([cells], colWidths=[width / len(cells)] * len(cells))
    grid.setStyle(TableStyle([
        ("BOX", (0, 0), (-1, -1), 0.5, RULE),
        ("INNERGRID", (0, 0), (-1, -1), 0.5, RULE),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("TOPPADDING", (0, 0), (-1, -1), 4),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 4),
    ]))
    return grid


def _block_flowables(block: doc_model.Block, styles: dict[str, ParagraphStyle], frame_width: float,
                     frame_height: float) -> list:
    """The flowables of one block of a section."""
    if block.kind == "paragraph":
        return [Paragraph(_text(block.text), styles["body"]), Spacer(1, 4)]
    if block.kind == "callout":
        warning = block.level == "warning"
        return [_boxed([Paragraph(_text(block.text), styles["banner" if warning else "body"])],
                       WARN_BG if warning else BAND, WARN_RULE if warning else ACCENT, frame_width), Spacer(1, 5)]
    if block.kind == "list":
        items = [ListItem(Paragraph(_text(item), styles["body"]), leftIndent=10) for item in block.items]
        return [ListFlowable(items, bulletType="bullet", start="\u2022", leftIndent=10, bulletFontSize=8),
                Spacer(1, 4)]
    if block.kind == "table":
        return _table(block, styles, frame_width)
    if block.kind == "figure":
        return _figure(block, styles, frame_width, frame_height)
    if block.kind == "figrow":
        return _figure_row(block, styles, frame_width, frame_height)
    if block.kind == "gallery":
        return _gallery(block, styles, frame_width)
    return []


def render_pdf(document: doc_model.Document) -> bytes:
    """The report as PDF bytes: A4, headings, tables, figures, page numbers in the footer.

    Args:
        document: the composed report.

    Returns:
        The complete PDF file.
    """
    styles = _styles()
    buffer = io.BytesIO()
    page_width, page_height = A4
    frame_width = page_width - 2 * MARGIN_X
    frame_height = page_height - MARGIN_TOP - MARGIN_BOTTOM
    template = SimpleDocTemplate(
        buffer, pagesize=A4, leftMargin=MARGIN_X, rightMargin=MARGIN_X, topMargin=MARGIN_TOP,
        bottomMargin=MARGIN_BOTTOM, title=document.title, author="medrec", subject="Clinical validation report",
        creator=f"medrec {__version__}", invariant=True,
    )
    story: list = [
        Paragraph(_text(document.title), styles["title"]),
        Paragraph(_text(doc_model.subtitle(document)), styles["meta"]),
    ]
    if document.alert:
        story += [_boxed([Paragraph(_text(document.alert), styles["alert"])], ALERT_BG, ALERT_RULE, frame_width, 2.2),
                  Spacer(1, 6)]
    if document.banner:
        story += [_boxed([Paragraph(_text(document.banner), styles["banner"])], WARN_BG, WARN_RULE, frame_width,
                         1.6), Spacer(1, 6)]
    story += [
        _boxed([Paragraph("<b>Summary</b>", styles["summary"]), Paragraph(_text(document.summary), styles["summary"])],
               BAND, BAND, frame_width),
        Spacer(1, 6),
    ]
    if document.key_figures:
        story += [_key_figures(document, styles, frame_width), Spacer(1, 4)]
    for section in document.sections:
        story.append(CondPageBreak(40 * mm))
        heading = Paragraph(_text(section.title), styles["h2"])
        parts = [_block_flowables(block, styles, frame_width, frame_height) for block in section.blocks]
        # the heading goes with its first block: never a heading alone at the foot of a page
        # (a KeepTogether inside a KeepTogether moves to the next page even when it fits: unwrap it)
        first = [inner for flowable in parts[0] for inner in
                 (flowable._content if isinstance(flowable, KeepTogether) else [flowable])] if parts else []
        story.append(KeepTogether([heading, *first]) if first else heading)
        for flowables in parts[1:]:
            story += flowables

    class _Canvas(_NumberedCanvas):
        footer_text = document.footer
        footer_font = styles["body"].fontName
        report_date = document.date

    template.build(story, canvasmaker=_Canvas)
    return buffer.getvalue()
