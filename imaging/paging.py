"""Whole-number query parameters (``offset``, ``limit``, ``page``), read strictly.

Only ASCII digits are taken (``int()`` alone also takes ``+3``, ``1_000`` and other
scripts' digits), and no value beyond :data:`MAX_QUERY_NUMBER`: an ``OFFSET`` past the
database's integer range is an error the database raises (a 500), and no archive has two
billion matches to page through. Pure code: no ORM.
"""

from __future__ import annotations

import re

from django.utils.translation import gettext as _

MAX_QUERY_NUMBER = 2**31 - 1  # PostgreSQL's integer; well inside bigint and SQLite's int64
_DIGITS = re.compile(r"[0-9]+")


#: Rows a listing page shows (the study list, the order list).
PAGE_SIZE = 50


def page_count(count: int) -> int:
    """Pages of ``count`` rows (at least one)."""
    return max(1, -(-count // PAGE_SIZE))


class PageNumbers:
    """``has_previous`` and ``pages`` for a page dataclass with ``number`` and ``count``."""

    number: int
    count: int

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def pages(self) -> int:
        return page_count(self.count)


class BadNumber(ValueError):
    """A numeric query parameter that cannot be used; the message names it and says why."""


def whole_number(name: str, text: str, *, default: int, minimum: int = 0,
                 maximum: int = MAX_QUERY_NUMBER) -> int:
    """``text`` as an integer from ``minimum`` to ``maximum``; ``default`` when empty.

    Raises :class:`BadNumber`.
    """
    text = text.strip()
    if text == "":
        return default
    if text.startswith("-") and _DIGITS.fullmatch(text[1:]):
        raise BadNumber(_("%(name)s must not be negative") % {"name": name})
    if not _DIGITS.fullmatch(text):
        raise BadNumber(_("%(name)s must be a whole number, not %(value)r")
                        % {"name": name, "value": text[:20]})
    # Compare lengths first: int() of thousands of digits is slow, and refused anyway.
    if len(text.lstrip("0")) > len(str(maximum)) or int(text) > maximum:
        raise BadNumber(_("%(name)s must be at most %(maximum)d")
                        % {"name": name, "maximum": maximum})
    number = int(text)
    if number < minimum:
        raise BadNumber(_("%(name)s must be at least %(minimum)d")
                        % {"name": name, "minimum": minimum})
    return number
