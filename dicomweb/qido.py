"""QIDO-RS (PS3.18 10.6): search studies, series and instances the caller may see.

Matching is :mod:`imaging.query`'s (shared with C-FIND); this module reads the HTTP query,
scopes it with the access policy, records the search in the audit trail and renders DICOM
JSON. Decisions worth knowing:

- Query values are percent-decoded once, and ``%2A`` ``%3F`` ``%5E`` ``%2C`` ``%5C`` left
  over from clients that encode twice are decoded again. ``+`` is a space, as clients
  (requests, dicomweb-client) encode one; a plus sign arrives as ``%2B``.
- ``includefield`` may repeat and may hold a comma-separated list; ``all`` returns every
  attribute of the level (see ``imaging.query``).
- ``fuzzymatching=true`` is honoured for person names: every word of the value must begin
  a word of the name, in any order and case. ``fuzzymatching=false`` is the default.
- An unknown attribute is a 400 with a message. A known attribute the index cannot match
  on (no column, or sequence keys) is ignored with a ``Warning: 299`` header, as PS3.18
  8.3.4.1 allows; it is still returned.
- No match is 200 with an empty array. Results beyond ``limit`` (default
  ``DEFAULT_LIMIT``, at most ``MAX_LIMIT``) are announced with a ``Warning`` header.
- ``offset`` and ``limit`` are whole numbers up to ``imaging.paging.MAX_QUERY_NUMBER``;
  anything else (negative, ``1.5``, beyond the database's integers) is a 400.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote_plus

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.urls import reverse

from audit.trail import Actor
from imaging import policies, principals
from imaging.access import record_search
from imaging.models import Study
from imaging.paging import BadNumber, whole_number
from imaging.query import Level, QueryError, attribute, datasets, find, uid_list

from . import auth
from .renderers import DICOM_JSON, dicom_json_response, problem

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10000
ACCEPTABLE = {DICOM_JSON, "application/json", "*/*", "application/*"}
CONTROL = {"limit", "offset", "includefield", "fuzzymatching"}
_LEFTOVER = re.compile(r"%(2A|3F|5E|2C|5C)", re.IGNORECASE)


class BadQuery(ValueError):
    pass


def _decode(text: str) -> str:
    once = unquote_plus(text)
    return _LEFTOVER.sub(lambda m: chr(int(m.group(1), 16)), once)


def parse_query_string(query_string: str) -> list[tuple[str, str]]:
    pairs = []
    for item in query_string.split("&"):
        if not item:
            continue
        key, _, value = item.partition("=")
        pairs.append((_decode(key).strip(), _decode(value)))
    return pairs


def _acceptable(request: HttpRequest) -> bool:
    accept = request.META.get("HTTP_ACCEPT", "")
    if not accept.strip():
        return True
    for item in accept.split(","):
        media_type, _, params = item.strip().partition(";")
        if media_type.strip().lower() in ACCEPTABLE and "q=0" != params.replace(" ", ""):
            return True
    return False


def search(request: HttpRequest, level: Level, study: str | None = None,
           series: str | None = None) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    refused = auth.authenticate(request)
    if refused is not None:
        return refused
    if not _acceptable(request):
        return problem(HTTPStatus.NOT_ACCEPTABLE,
                       f"search results are available as {DICOM_JSON} only")

    pairs = parse_query_string(request.META.get("QUERY_STRING", ""))
    keys: list[tuple[str, str]] = []
    include: list[str] = []
    warnings: list[str] = []
    limit, offset, fuzzy = DEFAULT_LIMIT, 0, False
    try:
        for key, value in pairs:
            name = key.lower()
            if name == "limit":
                limit = whole_number("limit", value, default=DEFAULT_LIMIT)
                if limit > MAX_LIMIT:
                    warnings.append(f"The limit was reduced to {MAX_LIMIT}")
                    limit = MAX_LIMIT
            elif name == "offset":
                offset = whole_number("offset", value, default=0)
            elif name == "fuzzymatching":
                if value.strip().lower() not in ("true", "false", ""):
                    raise BadQuery("fuzzymatching must be true or false")
                fuzzy = value.strip().lower() == "true"
            elif name == "includefield":
                include.extend(v.strip() for v in value.split(",") if v.strip())
            elif "." in key:
                # A sequence matching key (00400275.00321060): known, but not matched on.
                for step in key.split("."):
                    attribute(step)
                warnings.append(f"The {key} query key is not supported")
            else:
                keys.append((key, value))
        query = find(level, keys, studies=policies.visible_studies(principals.of_request(request)),
                     study_uid=study, series_uid=series, include=include, fuzzy=fuzzy)
    except (BadQuery, BadNumber, QueryError) as exc:
        return problem(HTTPStatus.BAD_REQUEST, str(exc))

    rows = list(query.queryset[offset: offset + limit + 1]) if limit else []
    truncated = len(rows) > limit
    rows = rows[:limit]
    record_search(
        Actor.from_request(request), _studies(level, rows),
        query={"level": level, "study": study or "", "series": series or "",
               **query.matching, "limit": limit, "offset": offset},
        session=study is not None or _one_study(query.matching),
    )

    base = request.build_absolute_uri(reverse("dicomweb:studies"))

    def retrieve_url(lvl: str, study_uid: str, series_uid: str, sop_uid: str) -> str:
        if lvl == "study":
            return f"{base}/{study_uid}"
        if lvl == "series":
            return f"{base}/{study_uid}/series/{series_uid}"
        return f"{base}/{study_uid}/series/{series_uid}/instances/{sop_uid}"

    body = datasets(query, rows, retrieve_url=retrieve_url)
    warnings.extend(f"The {k} query key is not supported" for k in query.unsupported)
    if truncated:
        warnings.append("There are additional results that can be requested")
    headers = {}
    if warnings:
        host = request.get_host()
        headers["Warning"] = ", ".join(f'299 {host} "{w}"' for w in warnings)
    response = dicom_json_response(request, body, headers=headers)
    if request.method == "HEAD":
        response.content = b""
    return response


def _one_study(matching: dict[str, str]) -> bool:
    """The search names one study by its UID (OHIF's first QIDO, ``?StudyInstanceUID=``):
    a look inside that study, audited on the caller's viewing session as the nested
    searches are. A list of UIDs is a search across studies (a wildcard in a UID is
    refused before this)."""
    return len(uid_list(matching.get("StudyInstanceUID", ""))) == 1


def _studies(level: Level, rows: Iterable[Any]) -> list[Study]:
    if level == "study":
        return list(rows)
    if level == "series":
        return [row.study for row in rows]
    return [row.series.study for row in rows]
