"""Names as the worklist searches them: unaccented, upper-cased, DICOM separators as spaces.

A person name is stored as DICOM has it ("JOSÉ^DA SILVA"); people type "jose silva". Rather
than ask the database to unaccent on every search (PostgreSQL's ``unaccent`` is neither
immutable, so not indexable, nor available everywhere, and SQLite has none), the normalized
form is kept in a column beside the name, written with it (:class:`SearchTextField`), and
the typed words are normalized the same way (:func:`searchable`). A trigram index on that
column then serves "contains" on PostgreSQL.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from typing import Any

from django.db import models

# PN components (^) and component groups (=) are word breaks to a reader.
_SEPARATORS = str.maketrans({"^": " ", "=": " "})


def searchable(text: str) -> str:
    """``text`` without accents, upper-cased, with ``^``/``=`` and runs of blanks as one
    space: ``"José^da  Silva"`` -> ``"JOSE DA SILVA"``."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_SEPARATORS))
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(bare.upper().split())


def code_list(codes: Iterable[str], max_length: int) -> str:
    """Distinct codes (modalities, body parts), upper-cased and sorted, backslash-separated
    as DICOM's multi-valued strings (``"ABDOMEN\\CHEST"``); cut at a whole code to fit."""
    joined = ""
    for code in sorted({c.strip().upper() for c in codes if c and c.strip()}):
        longer = f"{joined}\\{code}" if joined else code
        if len(longer) > max_length:
            break
        joined = longer
    return joined


class SearchTextField(models.CharField):  # type: ignore[type-arg]
    """A column holding :func:`searchable` of another field of the row, recomputed whenever
    the row is saved or bulk-created, so every writer of the name keeps it right without
    having to know about it. (A ``QuerySet.update`` of the source field must set it too.)"""

    def __init__(self, *args: Any, source: str = "", **kwargs: Any) -> None:
        self.source = source
        kwargs.setdefault("editable", False)
        kwargs.setdefault("blank", True)
        kwargs.setdefault("default", "")
        super().__init__(*args, **kwargs)

    def deconstruct(self) -> Any:
        name, path, args, kwargs = super().deconstruct()
        kwargs["source"] = self.source
        kwargs.pop("editable", None)
        kwargs.pop("blank", None)
        kwargs.pop("default", None)
        return name, path, args, kwargs

    def pre_save(self, model_instance: models.Model, add: bool) -> str:
        value = searchable(getattr(model_instance, self.source) or "")[: self.max_length]
        setattr(model_instance, self.attname, value)
        return value
