"""The staff worklist: which studies a search finds, in which order, a page at a time.

Plain functions between the page and the policy: :func:`parse` reads the page's GET
parameters into a :class:`WorklistQuery` (refusing bad values with a message for a 400),
and :func:`search` narrows :func:`imaging.policies.visible_studies` by it, so a search can
only ever return what the caller may see.

Names (patient, referring physician) match on any part, without accents or case, through
the normalized columns of :mod:`imaging.search_text` (trigram-indexed on PostgreSQL). A
page is 50 studies fetched with one more to know whether a next page exists; the total is
counted only up to :data:`COUNT_CAP`, because counting every match of an open search over
100,000 studies costs more than the page itself (bench/worklist_search.py). On PostgreSQL
modalities and body parts are trigram-indexed too, so a rare one is found without reading
every study (migration 0006).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from django.db.models import F, Q, QuerySet
from django.db.models.expressions import OrderBy
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy as _lazy

from accounts.models import Clinic

from . import policies
from .models import ReportStatus, Study
from .paging import PAGE_SIZE, BadNumber, PageNumbers, page_count, whole_number
from .principals import Principal
from .query import of_patients
from .search_text import searchable

#: Matches counted at most; past it the page says "more than".
COUNT_CAP = 1000
MAX_TEXT = 100  # characters of a typed filter; no name or ID is longer
_CODE = re.compile(r"[A-Z0-9_ ]{1,16}")  # a modality or body part (DICOM CS)
#: Offered in the form (any other DICOM code may still be typed into the URL).
MODALITIES = ("CR", "CT", "DX", "MG", "MR", "NM", "OT", "PT", "RF", "SR", "US", "XA")
#: Suggested while typing (BodyPartExamined's defined terms most seen in a clinic).
BODY_PARTS = ("ABDOMEN", "ANKLE", "BREAST", "CHEST", "CSPINE", "ELBOW", "EXTREMITY", "FOOT",
              "HAND", "HEAD", "HEART", "HIP", "KNEE", "LSPINE", "NECK", "PELVIS",
              "SHOULDER", "SKULL", "TSPINE", "WRIST")


def _by(field: str, descending: bool) -> list[OrderBy]:
    column = F(field)
    tiebreak = F("pk")
    if descending:
        return [column.desc(), tiebreak.desc()]
    return [column.asc(), tiebreak.asc()]


def _by_date(descending: bool) -> list[OrderBy]:
    # Undated studies count as the oldest: last when newest come first.
    if descending:
        return [F("study_date").desc(nulls_last=True), F("study_time").desc(), F("pk").desc()]
    return [F("study_date").asc(nulls_first=True), F("study_time").asc(), F("pk").asc()]


#: Sort keys the page offers; ``-key`` is the same in reverse.
SORT_KEYS = {
    "date": lambda d: _by_date(d),
    "name": lambda d: _by("patient__name_search", d),
    "patient_id": lambda d: _by("patient__patient_id", d),
    "accession": lambda d: _by("accession_number", d),
    "modality": lambda d: _by("modalities", d),
}
DEFAULT_SORT = "-date"
#: The sort choices the form offers (every key and its reverse are accepted).
SORT_CHOICES = (
    ("-date", _lazy("Newest first")), ("date", _lazy("Oldest first")),
    ("name", _lazy("Patient name, A to Z")), ("-name", _lazy("Patient name, Z to A")),
    ("patient_id", _lazy("Patient ID")), ("accession", _lazy("Accession number")),
    ("modality", _lazy("Modality")),
)


class BadQuery(ValueError):
    """A search parameter that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class WorklistQuery:
    """One worklist search as typed; empty means "any"."""

    q: str = ""  # the quick box: any part of the name, or the exact patient ID or accession
    name: str = ""
    patient_id: str = ""
    accession: str = ""
    date_from: datetime.date | None = None
    date_to: datetime.date | None = None
    modality: str = ""
    body_part: str = ""
    referring: str = ""
    clinic: int | None = None
    report_status: str = ""
    sort: str = DEFAULT_SORT
    page: int = 1

    def detail(self) -> dict[str, Any]:
        """The filters set, for the audit entry: what was searched, not the defaults."""
        found: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if value in ("", None) or (key == "sort" and value == DEFAULT_SORT):
                continue
            found[key] = value.isoformat() if isinstance(value, datetime.date) else value
        found["page"] = self.page
        return found

    def has_filters_beyond_quick(self) -> bool:
        """Whether a filter other than the quick box is set (the page then shows them)."""
        return any(value not in ("", None) for key, value in asdict(self).items()
                   if key not in ("q", "sort", "page"))

    def params(self, **changes: Any) -> dict[str, str]:
        """The GET parameters that ask for this search again (with ``changes``), defaults
        left out: for the page's sort and paging links."""
        values = {**asdict(self), **changes}
        params = {}
        for key, value in values.items():
            if value in ("", None) or (key == "sort" and value == DEFAULT_SORT) or (
                    key == "page" and value == 1):
                continue
            params[key] = value.isoformat() if isinstance(value, datetime.date) else str(value)
        return params


TEXT_FIELDS = ("q", "name", "patient_id", "accession", "referring")


def parse(params: Mapping[str, str], *, clinics: Mapping[int, str]) -> WorklistQuery:
    """The search ``params`` ask for; ``clinics`` are those the caller may choose from.

    Raises :class:`BadQuery`.
    """
    values: dict[str, Any] = {}
    for key in TEXT_FIELDS:
        text = " ".join(str(params.get(key, "")).split())
        if len(text) > MAX_TEXT:
            raise BadQuery(_("%(name)s is too long (at most %(max)d characters)")
                           % {"name": key, "max": MAX_TEXT})
        values[key] = text
    values["date_from"] = date_param(params, "date_from")
    values["date_to"] = date_param(params, "date_to")
    if values["date_from"] and values["date_to"] and values["date_from"] > values["date_to"]:
        raise BadQuery(_("date_from must not be after date_to"))
    values["modality"] = _code(params, "modality")
    values["body_part"] = _code(params, "body_part")
    try:
        clinic = whole_number("clinic", str(params.get("clinic", "")), default=0, minimum=1)
        values["page"] = whole_number("page", str(params.get("page", "")), default=1,
                                      minimum=1)
    except BadNumber as exc:
        raise BadQuery(str(exc)) from exc
    if clinic and clinic not in clinics:
        raise BadQuery(_("clinic: unknown clinic %(value)d") % {"value": clinic})
    values["clinic"] = clinic or None
    status = str(params.get("report_status", "")).strip()
    if status and status not in ReportStatus.values:
        raise BadQuery(_("report_status must be one of %(choices)s, not %(value)r")
                       % {"choices": ", ".join(ReportStatus.values), "value": status[:20]})
    values["report_status"] = status
    sort = str(params.get("sort", "")).strip() or DEFAULT_SORT
    if sort.removeprefix("-") not in SORT_KEYS:
        raise BadQuery(_("sort must be one of %(choices)s, not %(value)r")
                       % {"choices": ", ".join(SORT_KEYS), "value": sort[:20]})
    values["sort"] = sort
    assert set(values) == {f.name for f in fields(WorklistQuery)}
    return WorklistQuery(**values)


def date_param(params: Mapping[str, str], key: str) -> datetime.date | None:
    """The date ``params[key]`` gives as YYYY-MM-DD (None when empty); :class:`BadQuery`
    naming ``key`` otherwise. The order list (:mod:`orders.listing`) reads its dates so too."""
    text = str(params.get(key, "")).strip()
    if not text:
        return None
    try:
        if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
            raise ValueError(text)
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise BadQuery(_("%(name)s must be a date as YYYY-MM-DD, not %(value)r")
                       % {"name": key, "value": text[:20]}) from None


def _code(params: Mapping[str, str], key: str) -> str:
    text = str(params.get(key, "")).strip().upper()
    if text and not _CODE.fullmatch(text):
        raise BadQuery(_("%(name)s must be a DICOM code such as CT or CHEST, not %(value)r")
                       % {"name": key, "value": text[:20]})
    return text


def clinic_choices(principal: Principal) -> dict[int, str]:
    """The clinics the caller may narrow a search to: those she acts within (every clinic
    for a platform superuser), by name."""
    clinics = Clinic.objects.order_by("name")
    ids = principal.clinic_ids
    if ids is not None:
        clinics = clinics.filter(pk__in=sorted(ids))
    return dict(clinics.values_list("pk", "name"))


def _contains_words(field: str, text: str) -> Q:
    """Every word of ``text`` is somewhere in the normalized ``field``, in any order."""
    match = Q()
    for word in searchable(text).split():
        match &= Q(**{f"{field}__contains": word})
    return match


def _of_patients(principal: Principal, match: Q) -> Q:
    """Studies of the patients ``match`` finds among those ``principal`` may see, looked
    up first (:func:`imaging.query.of_patients`: 125 ms for a common first name at 100,000
    studies as a join). The study query still starts from the policy's visible studies."""
    return of_patients("patient_id", policies.visible_patients(principal).filter(match))


def _has_code(field: str, code: str) -> Q:
    """``code`` is one of the backslash-separated values of ``field`` ("CT" in "CT\\SR")."""
    return (Q(**{field: code}) | Q(**{f"{field}__startswith": f"{code}\\"})
            | Q(**{f"{field}__endswith": f"\\{code}"})
            | Q(**{f"{field}__contains": f"\\{code}\\"}))


def matching(principal: Principal, query: WorklistQuery) -> QuerySet[Study]:
    """The studies ``principal`` may see that ``query`` finds, in its order."""
    studies = policies.visible_studies(principal)
    if query.q:
        patients = Q(patient_id=query.q)
        if searchable(query.q):
            patients |= _contains_words("name_search", query.q)
        studies = studies.filter(_of_patients(principal, patients)
                                 | Q(accession_number=query.q))
    if query.name:
        studies = studies.filter(_of_patients(principal,
                                              _contains_words("name_search", query.name)))
    if query.patient_id:
        studies = studies.filter(_of_patients(principal, Q(patient_id=query.patient_id)))
    if query.accession:
        studies = studies.filter(accession_number=query.accession)
    if query.date_from:
        studies = studies.filter(study_date__gte=query.date_from)
    if query.date_to:
        studies = studies.filter(study_date__lte=query.date_to)
    if query.modality:
        studies = studies.filter(_has_code("modalities", query.modality))
    if query.body_part:
        studies = studies.filter(_has_code("body_parts", query.body_part))
    if query.referring:
        studies = studies.filter(_contains_words("referring_physician_search",
                                                 query.referring))
    if query.clinic:
        studies = studies.filter(patient__clinic_id=query.clinic)
    if query.report_status:
        studies = studies.filter(report_status=query.report_status)
    key = query.sort.removeprefix("-")
    return studies.order_by(*SORT_KEYS[key](query.sort.startswith("-")))


@dataclass(frozen=True)
class WorklistPage(PageNumbers):
    """One page of a search: its studies and where it stands among all matches."""

    studies: list[Study]
    number: int
    has_next: bool
    #: Matches, counted up to :data:`COUNT_CAP`; ``capped`` when there are more.
    count: int
    capped: bool


def search(principal: Principal, query: WorklistQuery) -> WorklistPage:
    """The page of matches ``query`` asks for. A page past the last shows the last."""
    studies = matching(principal, query)
    count = _capped_count(studies)
    number = query.page
    last = page_count(count)
    if number > last and count < COUNT_CAP:
        number = last
    start = (number - 1) * PAGE_SIZE
    rows = list(studies[start:start + PAGE_SIZE + 1])
    return WorklistPage(studies=rows[:PAGE_SIZE], number=number,
                        has_next=len(rows) > PAGE_SIZE, count=min(count, COUNT_CAP),
                        capped=count > COUNT_CAP)


def _capped_count(studies: QuerySet[Study]) -> int:
    """How many studies match, up to one past :data:`COUNT_CAP` (a COUNT over a LIMIT)."""
    return studies.order_by().values("pk")[:COUNT_CAP + 1].count()
