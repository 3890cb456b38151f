"""CSV cells that a spreadsheet shows as text, never runs as a formula.

Audit exports carry what came from outside (user agents, usernames, reasons typed by
staff). A cell beginning with ``=``, ``+``, ``-`` or ``@`` (or a tab or carriage return,
which some spreadsheets skip before reading one of those) is taken for a formula when the
file is opened; OWASP's advice is to prefix such a cell with a single quote, which
spreadsheets hide and treat as "this is text". Every CSV export of audit data writes its
cells through :func:`safe_row`.
"""

from __future__ import annotations

from collections.abc import Iterable

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> object:
    """``value`` with a leading ``'`` if it is text a spreadsheet would run; else as is."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def safe_row(values: Iterable[object]) -> list[object]:
    return [safe_cell(value) for value in values]
