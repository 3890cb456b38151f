"""A report's text as a PDF document (fpdf2), to be stored as an Encapsulated PDF.

Pure: it is given every string it prints, already translated (:class:`ReportDocument`), and
returns bytes. The font is a TrueType file embedded in the PDF (settings.REPORT_PDF_FONT,
DejaVu Sans by default), so any character a doctor types prints; where that file is
missing, PDF's core Helvetica is used, whose Latin-1 covers Portuguese and Spanish, and the
few typographic characters beyond it (dashes, curly quotes, ≥) are written in Latin-1.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fpdf import FPDF
from fpdf.enums import XPos, YPos

CORE_FONT = "helvetica"
#: What Latin-1 lacks but reports often hold, in the nearest Latin-1 spelling.
LATIN1_SPELLING = str.maketrans({
    "\u2014": "-", "\u2013": "-", "\u2010": "-",  # dashes, hyphen
    "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',  # curly quotes
    "\u2026": "...", "\u2022": "\u00b7", "\u2265": ">=", "\u2264": "<=", "\u2192": "->",
    "\u2260": "!=",
})


@dataclass(frozen=True)
class ReportDocument:
    """What the PDF says, in the order it says it; every label already translated."""

    title: str
    #: Lines under the title: (label, value) about the patient and the exam.
    facts: Sequence[tuple[str, str]]
    #: (heading, text) sections: findings, impression.
    sections: Sequence[tuple[str, str]]
    #: The status line ("Preliminary report: not signed", "Final report").
    status: str
    #: The signature line and what stands under it (signed when, amends which version).
    signature: Sequence[str]
    author: str = ""
    language: str = "pt-BR"
    created: datetime.datetime | None = None
    notes: Sequence[str] = field(default_factory=tuple)


def render(document: ReportDocument, font: Path | None = None) -> bytes:
    """The PDF of ``document``, with ``font`` embedded (a TrueType file) if it exists."""
    pdf = FPDF(format="A4")
    pdf.set_margins(20, 20, 20)
    pdf.set_auto_page_break(auto=True, margin=20)
    pdf.set_title(document.title)
    pdf.set_author(document.author)
    pdf.set_creator("imaging-portal")
    pdf.set_lang(document.language)
    if document.created is not None:
        pdf.set_creation_date(document.created)
    family, regular, bold = _fonts(pdf, font)

    def text(value: str) -> str:
        return value if family != CORE_FONT else latin1(value)

    def line(value: str, *, size: float = 11, style: str = "", height: float = 6) -> None:
        pdf.set_font(family, bold if style == "B" else regular, size)
        pdf.multi_cell(0, height, text(value), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    pdf.add_page()
    line(document.title, size=16, style="B", height=9)
    line(document.status, size=11, style="B")
    pdf.ln(2)
    for label, value in document.facts:
        line(f"{label}: {value}", size=10, height=5)
    for heading, body in document.sections:
        pdf.ln(4)
        line(heading, size=12, style="B", height=7)
        line(body or "—")
    pdf.ln(8)
    for index, value in enumerate(document.signature):
        line(value, size=11 if index == 0 else 9, style="B" if index == 0 else "",
             height=6 if index == 0 else 5)
    for note in document.notes:
        pdf.ln(2)
        line(note, size=9, height=5)
    return bytes(pdf.output())


def _fonts(pdf: FPDF, font: Path | None) -> tuple[str, str, str]:
    """The font family and its regular and bold styles; a bold face is the file beside the
    regular one named ``<name>-Bold.ttf`` (as DejaVu's are), else the regular one."""
    if font is None or not font.is_file():
        return CORE_FONT, "", "B"
    pdf.add_font("report", "", str(font))
    bold_file = font.with_name(f"{font.stem}-Bold{font.suffix}")
    if bold_file.is_file():
        pdf.add_font("report", "B", str(bold_file))
        return "report", "", "B"
    return "report", "", ""


def latin1(value: str) -> str:
    """``value`` in Latin-1, as the core fonts print it: typographic characters spelled in
    Latin-1, anything else beyond it as "?"."""
    return value.translate(LATIN1_SPELLING).encode("latin-1", "replace").decode("latin-1")
