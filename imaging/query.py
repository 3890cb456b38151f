"""The one matching module: PS3.4 C.2.2.2 attribute matching over the index, shared by
QIDO-RS (``dicomweb.qido``) and the DIMSE C-FIND SCP. Free of HTTP and of the audit.

Callers pass the query level, a list of ``(keyword or tag, value)`` matching keys (a C-FIND
identifier converted to strings gives the same list), the studies the caller may see, and
the attributes to return. :func:`find` answers with a filtered, ordered QuerySet;
:func:`datasets` turns rows of it into DICOM JSON (PS3.18 F.2).

Matching uses indexed columns only (see ``COLUMNS``): single value, universal (empty or
``*``), wildcard ``*``/``?``, DA and TM ranges (open ones too), UID lists, and person names
without regard to case. ModalitiesInStudy matches the series of a study.

Values returned come from the same columns where there is one. Attributes without a column
(for example PatientAge, BitsAllocated, PerformedProcedureStepStartDate) are taken from the
stored metadata of a representative instance: the first stored instance of the study or the
series, or the instance itself. Such attributes can be returned but not matched on; a
matching key on them is reported in :attr:`Query.unsupported` and otherwise ignored (PS3.18
8.3.4.1 lets the origin server ignore keys it does not support, with a warning).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from django.db.models import (
    Exists,
    F,
    Lookup,
    Min,
    OuterRef,
    Q,
    QuerySet,
)
from django.db.models.functions import Upper
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from .models import Instance, Patient, Series, Study

Level = Literal["study", "series", "instance"]
LEVELS: tuple[Level, ...] = ("study", "series", "instance")

CHARSET = "ISO_IR 192"  # values are returned as Unicode (DICOM JSON is UTF-8)


class QueryError(ValueError):
    """A matching key the caller must fix; the message says which and why."""


class UnknownAttribute(QueryError):
    pass


class InvalidValue(QueryError):
    pass


@dataclass(frozen=True)
class Column:
    """Where an attribute lives in the index: the level of its row and its field."""

    owner: Literal["patient", "study", "series", "instance"]
    field: str
    kind: Literal["text", "pn", "uid", "date", "time", "int", "multi"] = "text"


# Attributes with an index column. "multi" is a backslash-separated column (ModalitiesInStudy).
COLUMNS: dict[str, Column] = {
    "PatientName": Column("patient", "name", "pn"),
    "PatientID": Column("patient", "patient_id"),
    "IssuerOfPatientID": Column("patient", "issuer"),
    "PatientBirthDate": Column("patient", "birth_date", "date"),
    "PatientSex": Column("patient", "sex"),
    "StudyInstanceUID": Column("study", "study_instance_uid", "uid"),
    "StudyDate": Column("study", "study_date", "date"),
    "StudyTime": Column("study", "study_time", "time"),
    "AccessionNumber": Column("study", "accession_number"),
    "StudyID": Column("study", "study_id"),
    "StudyDescription": Column("study", "description"),
    "ReferringPhysicianName": Column("study", "referring_physician", "pn"),
    "InstitutionName": Column("study", "institution"),
    "ModalitiesInStudy": Column("study", "modalities", "multi"),
    "NumberOfStudyRelatedSeries": Column("study", "num_series", "int"),
    "NumberOfStudyRelatedInstances": Column("study", "num_instances", "int"),
    "SeriesInstanceUID": Column("series", "series_instance_uid", "uid"),
    "Modality": Column("series", "modality"),
    "SeriesNumber": Column("series", "series_number", "int"),
    "SeriesDescription": Column("series", "description"),
    "BodyPartExamined": Column("series", "body_part"),
    "SeriesDate": Column("series", "series_date", "date"),
    "NumberOfSeriesRelatedInstances": Column("series", "num_instances", "int"),
    "SOPInstanceUID": Column("instance", "sop_instance_uid", "uid"),
    "SOPClassUID": Column("instance", "sop_class_uid", "uid"),
    "InstanceNumber": Column("instance", "instance_number", "int"),
    "NumberOfFrames": Column("instance", "number_of_frames", "int"),
    "Rows": Column("instance", "rows", "int"),
    "Columns": Column("instance", "columns", "int"),
    "AvailableTransferSyntaxUID": Column("instance", "transfer_syntax_uid", "uid"),
}

# Path from the queried row to the row that owns a column.
_PREFIX: dict[tuple[str, str], str] = {
    ("patient", "patient"): "",
    ("study", "patient"): "patient__",
    ("study", "study"): "",
    ("series", "patient"): "study__patient__",
    ("series", "study"): "study__",
    ("series", "series"): "",
    ("instance", "patient"): "series__study__patient__",
    ("instance", "study"): "series__study__",
    ("instance", "series"): "series__",
    ("instance", "instance"): "",
}
_RANK = {"patient": 0, "study": 1, "series": 2, "instance": 3}

# Returned without being stored: the archive keeps everything online.
CONSTANT = {"SpecificCharacterSet": CHARSET, "InstanceAvailability": "ONLINE"}
# Computed by the caller (it knows the base URL); query.py only reserves the slot.
RETRIEVE_URL = "RetrieveURL"
# Keys that say how to query rather than what to match.
NOT_MATCHED = {"QueryRetrieveLevel", "SpecificCharacterSet", "InstanceAvailability",
               RETRIEVE_URL, "TimezoneOffsetFromUTC"}

_STUDY_DEFAULT = (
    "SpecificCharacterSet", "StudyDate", "StudyTime", "AccessionNumber",
    "InstanceAvailability", "ModalitiesInStudy", "ReferringPhysicianName", RETRIEVE_URL,
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
    "StudyID", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
    "StudyDescription",
)
_SERIES_DEFAULT = (
    "SpecificCharacterSet", "Modality", "SeriesInstanceUID", "SeriesNumber",
    "SeriesDescription", "SeriesDate", "BodyPartExamined", "NumberOfSeriesRelatedInstances",
    "InstanceAvailability", RETRIEVE_URL, "StudyInstanceUID",
)
_INSTANCE_DEFAULT = (
    "SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "InstanceAvailability",
    RETRIEVE_URL, "InstanceNumber", "Rows", "Columns", "NumberOfFrames",
    "AvailableTransferSyntaxUID", "StudyInstanceUID", "SeriesInstanceUID",
)

# For includefield=all: which metadata attributes belong to the patient/study level and to
# the series level (PS3.3 Patient, General Study, Patient Study, General Series, General
# Equipment modules and friends). At the instance level "all" is the whole instance.
_STUDY_GROUPS = {0x0010, 0x0032, 0x0038}
_STUDY_TAGS = {
    0x00080020, 0x00080030, 0x00080050, 0x00080051, 0x00080090, 0x00080096, 0x00080201,
    0x00081030, 0x00081032, 0x00081048, 0x00081049, 0x00081060, 0x00081062, 0x00081080,
    0x00081084, 0x0020000D, 0x00200010, 0x00080080, 0x00080081,
}
_SERIES_TAGS = {
    0x00080021, 0x00080031, 0x00080060, 0x00080070, 0x00081010, 0x00081040, 0x00081050,
    0x00081070, 0x00081090, 0x0008103E, 0x00081111, 0x00180015, 0x00181000, 0x00181020,
    0x00181030, 0x00185100, 0x0020000E, 0x00200011, 0x00200052, 0x00200060, 0x00400244,
    0x00400245, 0x00400253, 0x00400254, 0x00400275, 0x00280301,
}


@dataclass(frozen=True)
class Attribute:
    keyword: str
    tag: int
    vr: str

    @property
    def hex(self) -> str:
        return f"{self.tag:08X}"

    @property
    def column(self) -> Column | None:
        return COLUMNS.get(self.keyword)


_TAG_RE = re.compile(r"^[0-9A-Fa-f]{8}$")
_IS_RE = re.compile(r"^[+-]?[0-9]{1,12}$")


def attribute(key: str) -> Attribute:
    """The attribute named by a keyword (``PatientID``) or a tag (``00100020``)."""
    key = key.strip()
    if _TAG_RE.match(key):
        tag = int(key, 16)
        keyword = keyword_for_tag(tag)
        if not keyword:
            raise UnknownAttribute(f"unknown attribute tag {key}")
    else:
        found = tag_for_keyword(key)
        if found is None:
            raise UnknownAttribute(f"unknown attribute {key!r}")
        tag, keyword = int(found), key
    return Attribute(keyword, tag, dictionary_VR(tag))


@dataclass
class Query:
    """A search ready to run: ``queryset`` is filtered and ordered, not yet evaluated."""

    level: Level
    queryset: QuerySet[Any]
    return_keys: list[Attribute]
    include_all: bool = False
    unsupported: list[str] = field(default_factory=list)
    matching: dict[str, str] = field(default_factory=dict)


def find(
    level: Level,
    keys: Iterable[tuple[str, str]],
    *,
    studies: QuerySet[Study],
    study_uid: str | None = None,
    series_uid: str | None = None,
    include: Iterable[str] = (),
    fuzzy: bool = False,
) -> Query:
    """Build the search for ``level`` over ``studies`` (the caller's visible studies).

    Parameters
    ----------
    level : {"study", "series", "instance"}
    keys : iterable of (str, str)
        Matching keys as (keyword or 8-digit hex tag, DICOM string value). An empty value is
        universal matching: no filter, but the attribute is returned.
    studies : QuerySet of Study
        The scope the access policy allows; nothing outside it is ever matched.
    study_uid, series_uid : str, optional
        The study (and series) the search is nested under.
    include : iterable of str
        Further attributes to return, or ``"all"``.
    fuzzy : bool
        Fuzzy person-name matching: every word of the value must start a word of the name,
        in any order and case (``paula pere`` finds ``Pereira^Paula``).

    Raises
    ------
    UnknownAttribute, InvalidValue
    """
    if level not in LEVELS:
        raise ValueError(level)
    qs = _base(level, studies)
    if study_uid is not None:
        qs = qs.filter(**{_path(level, "study", "study_instance_uid"): study_uid})
    if series_uid is not None:
        qs = qs.filter(**{_path(level, "series", "series_instance_uid"): series_uid})

    wanted: list[str] = list(_defaults(level, nested=study_uid is not None))
    unsupported: list[str] = []
    matching: dict[str, str] = {}
    patient_match = Q()
    for key, raw_value in keys:
        attr = attribute(key)
        value = raw_value.strip()
        wanted.append(attr.keyword)
        if attr.keyword in NOT_MATCHED or value in ("", "*"):
            continue
        matching[attr.keyword] = value
        column = attr.column
        if column is None or _RANK[column.owner] > _RANK[level]:
            # No column, or a lower level than the query (e.g. SOPClassUID in a study
            # search): not matched here.
            unsupported.append(attr.keyword)
            continue
        if column.owner == "patient":
            patient_match &= _condition("patient", attr, column, value, fuzzy=fuzzy)
        else:
            qs = qs.filter(_condition(level, attr, column, value, fuzzy=fuzzy))
    if patient_match:
        qs = qs.filter(_of_patients(level, patient_match))

    include_all = False
    for key in include:
        if key.strip().lower() == "all":
            include_all = True
        elif key.strip():
            wanted.append(attribute(key).keyword)
    return_keys: list[Attribute] = []
    seen: set[str] = set()
    for keyword in wanted:
        if keyword not in seen:
            seen.add(keyword)
            return_keys.append(attribute(keyword))
    return Query(level, qs.order_by(*_ORDER[level]), return_keys, include_all, unsupported,
                 matching)


_ORDER = {
    "study": ("-study_date", "-study_time", "-pk"),
    "series": ("study_id", "series_number", "pk"),
    "instance": ("series_id", "instance_number", "pk"),
}


#: Patients a search may find first and still hand to the study query as a list.
PATIENT_CANDIDATES = 2000


def of_patients(path: str, patients: QuerySet[Patient]) -> Q:
    """Rows whose patient (``path``, e.g. ``patient_id``) is one of ``patients``, looked up
    first: up to :data:`PATIENT_CANDIDATES` of them go into the query as a list, so the
    planner knows how few they are and starts from them. As a join it guessed wrong,
    walking studies newest first and testing each one's patient: 100 ms for ``*SILVA*``
    at 100,000 studies, where the list takes 2 ms. More patients than that are common
    enough for the walk to be quick. Used by QIDO-RS and C-FIND (below) and by the doctors'
    worklist (imaging.worklist)."""
    keys = patients.order_by().values_list("pk", flat=True)
    found = list(keys[:PATIENT_CANDIDATES + 1])
    if len(found) <= PATIENT_CANDIDATES:
        return Q(**{f"{path}__in": found})
    return Q(**{f"{path}__in": keys})


def _of_patients(level: Level, match: Q) -> Q:
    """Rows of the patients ``match`` finds (:func:`of_patients`; the trigram index on
    ``UPPER(name)`` serves ``*SILVA*``). The search still runs over the caller's visible
    studies, so a patient the caller may not see is in the list to no effect."""
    return of_patients(_path(level, "study", "patient_id"), Patient.objects.filter(match))


def _base(level: Level, studies: QuerySet[Study]) -> QuerySet[Any]:
    if level == "study":
        return studies.select_related("patient")
    if level == "series":
        return Series.objects.select_related("study__patient").filter(
            study__in=studies.values("pk")
        )
    return (
        Instance.objects.select_related("series__study__patient")
        .defer("metadata")
        .filter(series__study__in=studies.values("pk"))
    )


def _defaults(level: Level, *, nested: bool) -> Sequence[str]:
    if level == "study":
        return _STUDY_DEFAULT
    if level == "series":
        # Outside a study, a series also carries its study's attributes (PS3.18 10.6.3.3.2).
        return _SERIES_DEFAULT if nested else (*_SERIES_DEFAULT, *_STUDY_DEFAULT)
    if nested:
        return _INSTANCE_DEFAULT
    return (*_INSTANCE_DEFAULT, *_SERIES_DEFAULT, *_STUDY_DEFAULT)


def _path(level: str, owner: str, name: str) -> str:
    return _PREFIX[(level, owner)] + name


# --- matching ------------------------------------------------------------------------------


class DicomWildcard(Lookup):  # type: ignore[type-arg]
    """``*`` and ``?`` wildcard matching (PS3.4 C.2.2.2.4), case-sensitive as the standard
    says: GLOB on SQLite (whose LIKE ignores case), LIKE with an escape elsewhere.
    Used directly as an expression, never registered on fields."""

    lookup_name = "dicom_wildcard"
    prepare_rhs = False

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        lhs, lhs_params = self.process_lhs(compiler, connection)
        rhs, rhs_params = self.process_rhs(compiler, connection)
        if connection.vendor == "sqlite":
            return f"{lhs} GLOB {rhs}", [*lhs_params, *rhs_params]
        return f"{lhs} LIKE {rhs} ESCAPE '!'", [*lhs_params, *rhs_params]

    def process_rhs(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        pattern = str(self.rhs.value if hasattr(self.rhs, "value") else self.rhs)
        if connection.vendor == "sqlite":
            converted = pattern.replace("[", "[[]")
        else:
            converted = "".join(
                {"*": "%", "?": "_", "%": "!%", "_": "!_", "!": "!!"}.get(c, c) for c in pattern
            )
        if getattr(self, "upper", False):
            return "UPPER(%s)", [converted]
        return "%s", [converted]


class _UpperWildcard(DicomWildcard):
    upper = True


def _has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


_UID_SEPARATORS = re.compile(r"[\\,]")


def uid_list(value: str) -> list[str]:
    """The UIDs of a UID matching value: split on backslashes or, as OHIF sends them, on
    commas."""
    return [v.strip() for v in _UID_SEPARATORS.split(value) if v.strip()]


def _condition(level: Level | Literal["patient"], attr: Attribute, column: Column,
               value: str, *, fuzzy: bool) -> Q:
    path = _path(level, column.owner, column.field)
    if column.kind == "multi":
        assert level != "patient", "ModalitiesInStudy is a study's"
        return _modalities(level, value)
    if column.kind == "uid":
        values = uid_list(value)
    else:
        values = [v.strip() for v in value.split("\\") if v.strip()]
    if not values:
        return Q()
    if column.kind == "uid":
        if any(_has_wildcard(v) for v in values):
            raise InvalidValue(f"{attr.keyword}: UIDs are matched exactly, not by wildcard")
        return Q(**{f"{path}__in": values})
    condition = Q()
    for one in values:  # a backslash list matches any of its values
        condition |= _one(attr, column, path, one, fuzzy=fuzzy)
    return condition


def _one(attr: Attribute, column: Column, path: str, value: str, *, fuzzy: bool) -> Q:
    if column.kind == "date":
        return _date_range(attr, path, value)
    if column.kind == "time":
        return _time_range(attr, path, value)
    if column.kind == "int":
        # An Integer String (PS3.5 6.2): ASCII digits, -2^31 to 2^31-1. int() alone would
        # take other scripts' digits, and any size.
        if not _IS_RE.match(value.strip()) or not -2**31 <= int(value) < 2**31:
            raise InvalidValue(f"{attr.keyword}: {value[:20]!r} is not an integer "
                               "from -2147483648 to 2147483647")
        return Q(**{path: int(value)})
    if column.kind == "pn":
        if fuzzy:
            return _fuzzy_name(path, value)
        if _has_wildcard(value):
            return Q(_UpperWildcard(Upper(F(path)), value))
        return Q(_UpperWildcard(Upper(F(path)), value))  # no wildcard: exact, any case
    if _has_wildcard(value):
        return Q(DicomWildcard(F(path), value))
    return Q(**{path: value})


def _fuzzy_name(path: str, value: str) -> Q:
    condition = Q()
    for word in re.split(r"[\s^=]+", value.replace("*", "").replace("?", "")):
        if word:
            condition &= (
                Q(_UpperWildcard(Upper(F(path)), f"{word}*"))
                | Q(_UpperWildcard(Upper(F(path)), f"*^{word}*"))
                | Q(_UpperWildcard(Upper(F(path)), f"* {word}*"))
            )
    return condition


def _parse_date(attr: Attribute, text: str) -> datetime.date:
    text = text.strip().replace(".", "")
    try:
        return datetime.datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise InvalidValue(
            f"{attr.keyword}: {text!r} is not a date (YYYYMMDD, or a range YYYYMMDD-YYYYMMDD)"
        ) from None


def _date_range(attr: Attribute, path: str, value: str) -> Q:
    if "-" not in value:
        return Q(**{path: _parse_date(attr, value)})
    low, _, high = value.partition("-")
    condition = Q(**{f"{path}__isnull": False})
    if low.strip():
        condition &= Q(**{f"{path}__gte": _parse_date(attr, low)})
    if high.strip():
        condition &= Q(**{f"{path}__lte": _parse_date(attr, high)})
    if not low.strip() and not high.strip():
        raise InvalidValue(f"{attr.keyword}: a range needs at least one end")
    return condition


_TIME_RE = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")


def _time(attr: Attribute, text: str, *, upper: bool) -> str:
    text = text.strip().replace(":", "")
    if not _TIME_RE.match(text):
        raise InvalidValue(f"{attr.keyword}: {text!r} is not a time (HHMMSS.FFFFFF)")
    if upper:
        # "10" ends with 10:59:59.999999, "1030" with 10:30:59.999999.
        whole, _, frac = text.partition(".")
        return whole + "5959"[: 6 - len(whole)] + "." + (frac + "999999")[:6]
    return text


def _time_range(attr: Attribute, path: str, value: str) -> Q:
    nonempty = ~Q(**{path: ""})
    if "-" not in value:
        return nonempty & Q(**{f"{path}__gte": _time(attr, value, upper=False),
                               f"{path}__lte": _time(attr, value, upper=True)})
    low, _, high = value.partition("-")
    if not low.strip() and not high.strip():
        raise InvalidValue(f"{attr.keyword}: a range needs at least one end")
    condition = nonempty
    if low.strip():
        condition &= Q(**{f"{path}__gte": _time(attr, low, upper=False)})
    if high.strip():
        condition &= Q(**{f"{path}__lte": _time(attr, high, upper=True)})
    return condition


def _modalities(level: Level, value: str) -> Q:
    """ModalitiesInStudy: a study matches if one of its series has one of the modalities."""
    study_ref = {"study": "pk", "series": "study_id", "instance": "series__study_id"}[level]
    condition = Q()
    for modality in (v.strip() for v in value.split("\\")):
        if not modality:
            continue
        series = Series.objects.filter(study_id=OuterRef(study_ref))
        if _has_wildcard(modality):
            series = series.filter(DicomWildcard(F("modality"), modality))
        else:
            series = series.filter(modality=modality)
        condition |= Q(Exists(series))
    return condition


# --- returned datasets ---------------------------------------------------------------------

RetrieveURLBuilder = Callable[[str, str, str, str], str]


def datasets(
    query: Query, rows: Sequence[Any], *, retrieve_url: RetrieveURLBuilder | None = None,
) -> list[dict[str, Any]]:
    """The DICOM JSON dataset of each row, with the query's return keys.

    ``retrieve_url(level, study_uid, series_uid, sop_uid)`` builds RetrieveURL values; without
    it RetrieveURL is left out (C-FIND has no use for it).
    """
    level = query.level
    needs_metadata = query.include_all or any(
        a.column is None and a.keyword not in CONSTANT and a.keyword != RETRIEVE_URL
        for a in query.return_keys
    )
    metadata = _representative_metadata(level, rows) if needs_metadata else {}
    out = []
    for row in rows:
        meta = metadata.get(row.pk, {})
        ds: dict[str, Any] = {}
        if query.include_all:
            ds.update(_all_of_level(level, meta))
        for attr in query.return_keys:
            element = _element(level, row, attr, meta, retrieve_url)
            if element is not None:
                ds[attr.hex] = element
        out.append(dict(sorted(ds.items())))
    return out


def _element(level: Level, row: Any, attr: Attribute, meta: dict[str, Any],
             retrieve_url: RetrieveURLBuilder | None) -> dict[str, Any] | None:
    if attr.keyword == RETRIEVE_URL:
        if retrieve_url is None:
            return None
        study, series, sop = _uids(level, row)
        return {"vr": "UR", "Value": [retrieve_url(level, study, series, sop)]}
    if attr.keyword in CONSTANT:
        return {"vr": attr.vr, "Value": [CONSTANT[attr.keyword]]}
    column = attr.column
    if column is not None and _RANK[column.owner] <= _RANK[level]:
        return _json_value(attr, _column_value(level, row, column))
    element = meta.get(attr.hex)
    if element is None or "BulkDataURI" in element or "InlineBinary" in element:
        return {"vr": attr.vr}
    return dict(element)


def _uids(level: Level, row: Any) -> tuple[str, str, str]:
    if level == "study":
        return row.study_instance_uid, "", ""
    if level == "series":
        return row.study.study_instance_uid, row.series_instance_uid, ""
    return (row.series.study.study_instance_uid, row.series.series_instance_uid,
            row.sop_instance_uid)


def _column_value(level: Level, row: Any, column: Column) -> Any:
    obj = row
    for step in _PREFIX[(level, column.owner)].split("__"):
        if step:
            obj = getattr(obj, step)
    return getattr(obj, column.field)


def _json_value(attr: Attribute, value: Any) -> dict[str, Any]:
    vr = attr.vr
    if value is None or value == "":
        return {"vr": vr}
    if vr == "PN":
        return {"vr": vr, "Value": [{"Alphabetic": str(value)}]}
    if vr == "DA" and isinstance(value, datetime.date):
        return {"vr": vr, "Value": [value.strftime("%Y%m%d")]}
    if vr in ("IS", "US", "UL", "SS", "SL"):
        return {"vr": vr, "Value": [int(value)]}
    return {"vr": vr, "Value": [v for v in str(value).split("\\")]}


def _representative_metadata(level: Level, rows: Sequence[Any]) -> dict[int, dict[str, Any]]:
    """Row pk -> metadata of its first stored instance (the row itself for instances)."""
    pks = [row.pk for row in rows]
    if not pks:
        return {}
    if level == "instance":
        instance_of = {pk: pk for pk in pks}
    elif level == "series":
        instance_of = dict(
            Instance.objects.filter(series_id__in=pks).values("series_id")
            .annotate(first=Min("pk")).values_list("series_id", "first")
        )
    else:
        instance_of = dict(
            Instance.objects.filter(series__study_id__in=pks).values("series__study_id")
            .annotate(first=Min("pk")).values_list("series__study_id", "first")
        )
    metadata = dict(
        Instance.objects.filter(pk__in=instance_of.values()).values_list("pk", "metadata")
    )
    return {row_pk: metadata.get(inst_pk, {}) for row_pk, inst_pk in instance_of.items()}


def _all_of_level(level: Level, meta: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, element in meta.items():
        if "BulkDataURI" in element or "InlineBinary" in element:
            continue  # bulk data is for WADO-RS, never in a search response
        tag = int(key, 16)
        group = tag >> 16
        if group == 0x0002:
            continue
        study_level = group in _STUDY_GROUPS or tag in _STUDY_TAGS
        if level == "study" and not study_level:
            continue
        if level == "series" and not (study_level or tag in _SERIES_TAGS):
            continue
        out[key] = element
    return out
