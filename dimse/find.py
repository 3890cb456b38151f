"""C-FIND SCP for Patient Root and Study Root, on the one matching module.

The identifier becomes the same ``(keyword, value)`` matching keys QIDO-RS passes to
:func:`imaging.query.find`, so both match alike (PS3.4 C.2.2.2: universal, single value,
wildcard, range, UID list). Each answer carries exactly the requested keys (PS3.4 C.4.1.2.2:
no more than asked for), plus QueryRetrieveLevel and SpecificCharacterSet.

imaging.query has no PATIENT level; here a patient-level search runs at the study level
(patient attributes are columns there) and answers once per patient, with its own counts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

from django.db.models import Count
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from audit.models import AuditAction, Outcome
from audit.trail import record
from imaging import policies
from imaging.access import record_search
from imaging.models import Patient, Study
from imaging.query import COLUMNS, Level, Query, QueryError, attribute, datasets, find

from .policies import decide_peer, principal_for
from .sop_classes import PATIENT_ROOT
from .statuses import Status

if TYPE_CHECKING:
    from pynetdicom.dimse_primitives import C_FIND
    from pynetdicom.events import Event

    from .handlers import Listener

log = logging.getLogger(__name__)

LEVELS: dict[str, Level] = {"STUDY": "study", "SERIES": "series", "IMAGE": "instance"}
CHUNK = 500
PATIENT_COUNTS = {
    "NumberOfPatientRelatedStudies": "n_studies",
    "NumberOfPatientRelatedSeries": "n_series",
    "NumberOfPatientRelatedInstances": "n_instances",
}
ALWAYS = ("QueryRetrieveLevel", "SpecificCharacterSet")


class IdentifierError(ValueError):
    pass


def _string(value: Any) -> str:
    """An identifier value as the DICOM string imaging.query matches on."""
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(_string(v) for v in value)
    if isinstance(value, PersonName):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return str(value)


def matching_keys(identifier: Dataset) -> list[tuple[str, str]]:
    """``(keyword, value)`` for each key of the identifier; sequences are not matched on."""
    keys = []
    for element in identifier:
        if not element.keyword or element.keyword in ALWAYS or element.VR == "SQ":
            continue
        keys.append((element.keyword, _string(element.value)))
    return keys


def _requested(identifier: Dataset) -> list[str]:
    return [e.keyword for e in identifier if e.keyword and e.keyword not in ALWAYS]


def _answer(json_dataset: dict[str, Any], requested: list[str], level: str) -> Dataset:
    # Only the requested elements are decoded: a match carries every attribute QIDO-RS
    # returns (about twenty), and decoding them all through pydicom was most of an answer.
    wanted = {_CHARACTER_SET, *(attribute(keyword).hex for keyword in requested)}
    ds = Dataset.from_json({tag: element for tag, element in json_dataset.items()
                            if tag in wanted})
    answer = Dataset()
    answer.SpecificCharacterSet = ds.get("SpecificCharacterSet", "ISO_IR 192")
    answer.QueryRetrieveLevel = level
    for keyword in requested:
        if keyword in ds:
            answer[keyword] = ds[keyword]
        else:
            setattr(answer, keyword, None)  # known to the standard, empty here
    return answer


_CHARACTER_SET = "00080005"


def handle_find(event: Event, listener: Listener) -> Iterator[tuple[int, Dataset | None]]:
    """EVT_C_FIND: pending answers one match at a time, then success (or cancel)."""
    session = listener.session(event.assoc, caught_up=True)
    decision = decide_peer(session.peer if session else None, AuditAction.SEARCH,
                           allow_unknown=listener.allow_unknown_peers)
    if session is None or not decision:
        if session is not None:
            record(AuditAction.SEARCH, session.actor, None, Outcome.DENIED,
                   reason=decision.why, detail={"operation": "C-FIND"})
        yield Status.NOT_AUTHORISED, None
        return
    request = cast("C_FIND", event.request)
    model = str(request.AffectedSOPClassUID)
    try:
        identifier = event.identifier
        level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
        if level == "PATIENT" and model not in PATIENT_ROOT:
            raise IdentifierError("the Study Root model has no PATIENT level")
        if level != "PATIENT" and level not in LEVELS:
            raise IdentifierError(f"QueryRetrieveLevel {level!r} is not supported")
        keys = matching_keys(identifier)
        visible = policies.visible_studies(principal_for(
            session.peer, allow_unknown=listener.allow_unknown_peers))
        query = find(LEVELS.get(level, "study"), keys, studies=visible)
    except (IdentifierError, QueryError) as exc:
        log.info("C-FIND from %s refused: %s", session.calling_ae, exc)
        record(AuditAction.SEARCH, session.actor, None, Outcome.FAILED, reason=str(exc),
               detail={"operation": "C-FIND"})
        yield Status.FIND_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, None
        return
    except Exception as exc:
        log.exception("cannot read the C-FIND identifier")
        record(AuditAction.SEARCH, session.actor, None, Outcome.FAILED, reason=str(exc),
               detail={"operation": "C-FIND"})
        yield Status.FIND_UNABLE_TO_PROCESS, None
        return

    requested = _requested(identifier)
    detail = {"operation": "C-FIND", "level": level, **query.matching}
    if level == "PATIENT":
        yield from _patients(event, session.actor, query, requested, detail)
        return
    offset = 0
    while True:
        rows = list(query.queryset[offset: offset + CHUNK])
        record_search(session.actor, _studies(query.level, rows), query=detail)
        for json_dataset in datasets(query, rows):
            if event.is_cancelled:
                yield Status.CANCEL, None
                return
            yield Status.PENDING, _answer(json_dataset, requested, level)
        if len(rows) < CHUNK:
            break
        offset += CHUNK
    yield Status.SUCCESS, None


def _studies(level: Level, rows: list[Any]) -> list[Study]:
    if level == "study":
        return rows
    if level == "series":
        return [row.study for row in rows]
    return [row.series.study for row in rows]


def _patients(
    event: Event, actor: Any, query: Query, requested: list[str], detail: dict[str, Any],
) -> Iterator[tuple[int, Dataset | None]]:
    """One answer per patient with a matching study (study rows carry the patient)."""
    patient_pks = list(query.queryset.order_by().values_list("patient_id", flat=True)
                       .distinct())
    patients = Patient.objects.filter(pk__in=patient_pks).annotate(
        n_studies=Count("studies", distinct=True),
        n_series=Count("studies__series", distinct=True),
        n_instances=Count("studies__series__instances", distinct=True),
    ).order_by("name", "pk")
    first_study: dict[int, Study] = {}
    for study in query.queryset.order_by("patient_id", "pk"):
        first_study.setdefault(study.patient_id, study)
    record_search(actor, first_study.values(), query=detail)
    for patient in patients:
        if event.is_cancelled:
            yield Status.CANCEL, None
            return
        study = first_study[patient.pk]
        json_dataset = datasets(query, [study])[0]
        answer = _answer(json_dataset, [k for k in requested if k not in PATIENT_COUNTS],
                         "PATIENT")
        for keyword in requested:
            column = COLUMNS.get(keyword)
            if keyword not in PATIENT_COUNTS and (column is None or column.owner != "patient"):
                setattr(answer, keyword, None)  # not a patient-level attribute
        for keyword, annotation in PATIENT_COUNTS.items():
            if keyword in requested:
                setattr(answer, keyword, str(getattr(patient, annotation)))
        yield Status.PENDING, answer
    yield Status.SUCCESS, None
