"""FHIR search parameters (R4 "Search", 3.1.1): reading the query string into values the
searches match on.

- A repeated parameter is AND, a comma inside one value is OR (``\\,`` is a literal comma).
- Unknown parameters are ignored and left out of the ``self`` link, unless the client sent
  ``Prefer: handling=strict``; then they are a 400. A known parameter with a modifier this
  server does not offer is always a 400: ignoring it would widen the search.
- Dates match on the study date. A value is ``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD`` with
  an optional prefix (``eq`` ``ne`` ``gt`` ``lt`` ``ge`` ``le``); the value is the range it
  names (2026-03 is all of March) and matches as FHIR's prefixes say. A value with a time
  is refused: the index keeps the study's day, and a day cannot be compared to an instant.
- ``_count`` is bounded by :data:`MAX_COUNT`; paging goes on with ``_offset``.
"""

from __future__ import annotations

import calendar
import datetime
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db.models import Q
from django.http import HttpRequest

from imaging.paging import BadNumber, whole_number

DEFAULT_COUNT = 20
MAX_COUNT = 100
#: Accepted everywhere and never a filter.
RESULT_PARAMETERS = frozenset({"_count", "_offset", "_format", "_pretty"})
DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le")
_DATE = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")
_UNESCAPED_COMMA = re.compile(r"(?<!\\),")
_UNESCAPED_BAR = re.compile(r"(?<!\\)\|")


class SearchError(ValueError):
    """A search that cannot be run as asked: a 400 with an OperationOutcome."""


@dataclass(frozen=True)
class Token:
    """``system|code``. ``system`` None: any system (no bar given); "": explicitly none."""

    system: str | None
    code: str


@dataclass(frozen=True)
class DateRange:
    prefix: str
    start: datetime.date
    #: The day after the range's last day.
    end: datetime.date


@dataclass(frozen=True)
class Search:
    #: The parameters this search applies, as given: (name, value), in order.
    applied: list[tuple[str, str]] = field(default_factory=list)
    count: int = DEFAULT_COUNT
    offset: int = 0

    def values(self, *names: str) -> list[str]:
        return [value for name, value in self.applied if name in names]


def _unescape(text: str) -> str:
    return text.replace("\\,", ",").replace("\\|", "|").replace("\\$", "$").replace("\\\\", "\\")


def alternatives(value: str) -> list[str]:
    """The comma-separated alternatives of one value (OR)."""
    return [_unescape(part) for part in _UNESCAPED_COMMA.split(value) if part != ""]


def tokens(value: str) -> list[Token]:
    found = []
    for part in _UNESCAPED_COMMA.split(value):
        if part == "":
            continue
        pieces = _UNESCAPED_BAR.split(part, maxsplit=1)
        if len(pieces) == 2:
            found.append(Token(_unescape(pieces[0]), _unescape(pieces[1])))
        else:
            found.append(Token(None, _unescape(part)))
    return found


def date_range(value: str) -> DateRange:
    """One date value, prefix and all. Raises :class:`SearchError`."""
    prefix, text = "eq", value.strip()
    if text[:2] in DATE_PREFIXES:
        prefix, text = text[:2], text[2:]
    elif text[:2].isalpha():
        raise SearchError(f"unsupported date prefix {text[:2]!r}; use one of "
                          + ", ".join(DATE_PREFIXES))
    match = _DATE.fullmatch(text)
    if match is None:
        if "T" in text:
            raise SearchError(f"date {value!r} has a time; studies are matched by day: give "
                              "YYYY, YYYY-MM or YYYY-MM-DD")
        raise SearchError(f"bad date {value!r}: give YYYY, YYYY-MM or YYYY-MM-DD")
    year, month, day = (int(g) if g else None for g in match.groups())
    assert year is not None
    try:
        if month is None:
            start, end = datetime.date(year, 1, 1), datetime.date(year + 1, 1, 1)
        elif day is None:
            start = datetime.date(year, month, 1)
            end = start + datetime.timedelta(days=calendar.monthrange(year, month)[1])
        else:
            start = datetime.date(year, month, day)
            end = start + datetime.timedelta(days=1)
    except (ValueError, OverflowError) as exc:
        raise SearchError(f"bad date {value!r}: {exc}") from None
    return DateRange(prefix, start, end)


def date_q(column: str, value: str) -> Q:
    """The rows whose day in ``column`` matches the (comma-separated) date ``value``.

    The row's value is one day, [d, d+1); the search value is [start, end). FHIR: ``eq``
    the search range contains the day; ``gt`` the day lies above the range; ``ge`` above
    or within; ``lt``/``le`` the same downwards; ``ne`` not within.
    """
    match = Q()
    for part in alternatives(value):
        dates = date_range(part)
        within = Q(**{f"{column}__gte": dates.start, f"{column}__lt": dates.end})
        match |= {
            "eq": within,
            "ne": Q(**{f"{column}__lt": dates.start}) | Q(**{f"{column}__gte": dates.end}),
            "gt": Q(**{f"{column}__gte": dates.end}),
            "ge": Q(**{f"{column}__gte": dates.start}),
            "lt": Q(**{f"{column}__lt": dates.start}),
            "le": Q(**{f"{column}__lt": dates.end}),
        }[dates.prefix]
    return match


def reference_ids(value: str, resource_type: str) -> list[str]:
    """The ids a reference parameter names: ``5``, ``Patient/5`` or an absolute URL ending
    in ``Patient/5``. A reference to another resource type names nothing here."""
    ids = []
    for part in alternatives(value):
        pieces = part.rstrip("/").split("/")
        if len(pieces) == 1:
            ids.append(pieces[0])
        elif pieces[-2] == resource_type:
            ids.append(pieces[-1])
    return ids


def strict(request: HttpRequest) -> bool:
    """Whether the client asked for ``Prefer: handling=strict`` (lenient is the default)."""
    for item in request.headers.get("Prefer", "").split(","):
        name, _, setting = item.strip().partition("=")
        if name.strip().lower() == "handling" and setting.strip().strip('"').lower() == "strict":
            return True
    return False


def parse(request: HttpRequest, known: Iterable[str]) -> Search:
    """The search ``request`` asks for, among the ``known`` parameters (with their
    modifiers and chains spelled out, as ``subject:Patient.identifier``)."""
    offered = set(known)
    bases = {name.split(":")[0].split(".")[0] for name in offered}
    is_strict = strict(request)
    applied: list[tuple[str, str]] = []
    count, offset = DEFAULT_COUNT, 0
    try:
        for name in request.GET:
            for value in request.GET.getlist(name):
                if name == "_count":
                    count = min(whole_number("_count", value, default=DEFAULT_COUNT), MAX_COUNT)
                elif name == "_offset":
                    offset = whole_number("_offset", value, default=0)
                elif name in RESULT_PARAMETERS:
                    continue
                elif name in offered:
                    if value != "":
                        applied.append((name, value))
                elif name.split(":")[0].split(".")[0] in bases:
                    raise SearchError(f"search parameter {name!r} is not supported "
                                      "(unsupported modifier or chain)")
                elif is_strict:
                    raise SearchError(f"unknown search parameter {name!r}")
    except BadNumber as exc:
        raise SearchError(str(exc)) from None
    return Search(applied, count, offset)
