"""C-GET and C-MOVE SCPs: send stored objects back, one at a time, as they were received.

Both select instances by the unique keys of the Query/Retrieve information model (PS3.4
C.4.2.2.1: one or a list of UIDs at the requested level, plus the unique keys above it) and
yield them to pynetdicom, which runs the C-STORE sub-operations and keeps the pending,
completed, warning and failed counts. A dataset is read from its blob without decoding
values (pydicom keeps them raw), so what goes out is what came in; only one instance is in
memory at a time.

What the requester can take decides how each object goes (:func:`prepare`): as stored when
it accepted the stored transfer syntax, its dataset bytes streamed from the blob with no
decoding at all (:mod:`dimse.stored_send`, with the listener's pynetdicom patches);
converted only when it accepted none of them: pynetdicom converts between the uncompressed
little endian ones, and a compressed object is decompressed to Explicit VR Little Endian
when it accepted only uncompressed syntaxes; otherwise failed, with the real cause (no
context for its SOP class, a syntax the archive cannot convert to, an unreadable blob) in
the log and, once the sub-operations are done, on the audit trail. Objects converted are on
the trail too, with the syntax they were stored in and the one they went in. For C-MOVE the
listener proposes, per stored SOP class and syntax, the stored syntax and the uncompressed
ones.
"""

from __future__ import annotations

import collections
import logging
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy
from django.db.models import QuerySet
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import build_context, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext

from audit.models import AuditAction, Outcome
from audit.trail import Target, record
from imaging import blobs, policies
from imaging.dicomfile import dataset_offset
from imaging.models import Instance, Study

from . import direct_send, handlers, stored_send
from .peers import destination as find_destination
from .policies import decide_peer, may_receive, principal_for
from .sop_classes import PATIENT_ROOT
from .statuses import Status

if TYPE_CHECKING:
    from pynetdicom.events import Event

    from .handlers import Listener, Session

log = logging.getLogger(__name__)

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
# Unique key of each level, and the Instance field it selects on.
UNIQUE_KEYS = {
    "PATIENT": ("PatientID", "series__study__patient__patient_id"),
    "STUDY": ("StudyInstanceUID", "series__study__study_instance_uid"),
    "SERIES": ("SeriesInstanceUID", "series__series_instance_uid"),
    "IMAGE": ("SOPInstanceUID", "sop_instance_uid"),
}
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian)
MAX_REQUESTED_CONTEXTS = 128  # PS3.8: odd presentation context IDs 1 to 255


class IdentifierError(ValueError):
    """The retrieve identifier does not say what to retrieve in this information model."""


def _values(identifier: Dataset, keyword: str) -> list[str]:
    value = identifier.get(keyword)
    if value is None or value == "":
        return []
    items = list(value) if not isinstance(value, str | bytes) and hasattr(value, "__iter__") \
        else [value]
    return [str(v).strip() for v in items if str(v).strip()]


def matching_instances(identifier: Dataset, model: str,
                       studies: QuerySet[Study] | None = None) -> QuerySet[Instance]:
    """The instances a C-GET or C-MOVE identifier names (hierarchical retrieve).

    Not :mod:`imaging.query`'s matching, on purpose: a retrieve names objects by unique keys
    only, compared exactly (PS3.4 C.4.2.2.1), so ``PatientID=*`` is not "everyone" here, and
    an empty key at the requested level is an error rather than universal matching.
    """
    level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    if level not in LEVELS:
        raise IdentifierError(f"QueryRetrieveLevel {level!r} is not one of {LEVELS}")
    if level == "PATIENT" and model not in PATIENT_ROOT:
        raise IdentifierError("the Study Root model has no PATIENT level")
    own_key, _ = UNIQUE_KEYS[level]
    if not _values(identifier, own_key):
        raise IdentifierError(f"{own_key} is required at the {level} level")
    instances = Instance.objects.all()
    if studies is not None:
        instances = instances.filter(series__study__in=studies.values("pk"))
    for lvl in LEVELS[: LEVELS.index(level) + 1]:
        keyword, field = UNIQUE_KEYS[lvl]
        values = _values(identifier, keyword)
        if lvl == "PATIENT" and len(values) > 1:
            raise IdentifierError("PatientID takes one value")
        if values:
            instances = instances.filter(**{f"{field}__in": values})
    return instances.select_related("series__study__patient").order_by(
        "series__study_id", "series__series_number", "series_id", "instance_number", "pk"
    )


@dataclass(frozen=True)
class Stored:
    """What sending one instance needs: a row's few fields, not the row (no open cursor is
    held across the yields, which can be cut short by an abort)."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    blob_key: str
    has_file_meta: bool
    study_instance_uid: str


_STORED_FIELDS = ("sop_class_uid", "sop_instance_uid", "transfer_syntax_uid", "blob_key",
                  "has_file_meta", "series__study__study_instance_uid")
#: Instances whose fields are read at once, as the sub-operations reach them.
PAGE_SIZE = 500


class Matches:
    """The instances to send, in the retrieve's order: their primary keys only (8 bytes an
    instance) until the sub-operations reach them, then their :class:`Stored` fields a page
    of :data:`PAGE_SIZE` at a time. A record per instance held for the whole retrieve was
    about a kilobyte each: 100 MB for a study of 100,000 objects. An instance removed once
    matched (rejected, erased) is not sent, as its blob could not be read anyway.
    """

    def __init__(self, instances: QuerySet[Instance]) -> None:
        self._pks = array("q", instances.values_list("pk", flat=True).iterator(
            chunk_size=10 * PAGE_SIZE))

    def __len__(self) -> int:
        return len(self._pks)

    def __iter__(self) -> Iterator[Stored]:
        for start in range(0, len(self._pks), PAGE_SIZE):
            page = self._pks[start:start + PAGE_SIZE]
            rows = {pk: Stored(*fields) for pk, *fields in Instance.objects.filter(
                pk__in=list(page)).values_list("pk", *_STORED_FIELDS)}
            for pk in page:
                if pk in rows:
                    yield rows[pk]
                else:
                    log.warning("instance %d went before it was sent", pk)


def stored(instances: QuerySet[Instance]) -> Matches:
    return Matches(instances)


def _read(instance: Stored) -> Dataset:
    """The stored object as a dataset whose elements stay raw (re-encoded byte for byte)."""
    with blobs.open_blob(instance.blob_key) as fp:
        ds = dcmread(fp, force=not instance.has_file_meta)
    if not instance.has_file_meta:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = UID(instance.transfer_syntax_uid)
    return ds


def _unsendable(instance: Stored) -> Dataset:
    """A stand-in with no transfer syntax: pynetdicom's C-STORE sub-operation fails on it
    and counts it, with its SOP Instance UID, among the failed sub-operations."""
    ds = Dataset()
    ds.SOPClassUID = instance.sop_class_uid
    ds.SOPInstanceUID = instance.sop_instance_uid
    return ds


def _failed(uids: list[str] | None = None) -> Dataset:
    ds = Dataset()
    ds.FailedSOPInstanceUIDList = uids or []
    return ds


class Unsendable(Exception):
    """Why one object cannot go to this requester, in words for the record."""


def accepted_syntaxes(assoc: Association, sop_class_uid: str) -> list[UID]:
    """The transfer syntaxes the peer accepted for us to send ``sop_class_uid`` in."""
    return [UID(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts
            if cx.abstract_syntax == sop_class_uid and cx.as_scu]


def _name(uid: str) -> str:
    name = UID(uid).name
    return f"{name} ({uid})" if name != uid else uid


def _open_stored(instance: Stored) -> stored_send.StoredDataset:
    """The stored object as its dataset bytes, the blob open at the first of them."""
    source = blobs.open_blob(instance.blob_key)
    try:
        if instance.has_file_meta:
            source.seek(dataset_offset(source))
    except BaseException:
        source.close()
        raise
    return stored_send.StoredDataset(instance.sop_class_uid, instance.sop_instance_uid,
                                     instance.transfer_syntax_uid, source)


def prepare(instance: Stored, accepted: list[UID], *, as_stored: bool = False) -> Dataset:
    """The object as it can go in one of the ``accepted`` syntaxes, or :class:`Unsendable`.

    In the stored syntax, with ``as_stored`` (pynetdicom patched to send it): the stored
    bytes, undecoded. Otherwise pynetdicom sends a dataset in the accepted syntax matching
    its own, or converts between uncompressed syntaxes of the same byte order; a compressed
    object is decompressed here when the requester takes only uncompressed ones. Nothing is
    ever compressed.
    """
    if not accepted:
        raise Unsendable(f"the requester accepted no presentation context for "
                         f"{_name(instance.sop_class_uid)}")
    if as_stored and instance.transfer_syntax_uid in accepted:
        try:
            return _open_stored(instance)
        except Exception as exc:
            raise Unsendable(f"the stored object cannot be read: {exc}") from exc
    try:
        ds = _read(instance)
    except Exception as exc:
        raise Unsendable(f"the stored object cannot be read: {exc}") from exc
    syntax = UID(ds.file_meta.TransferSyntaxUID)
    if syntax in accepted:
        return ds
    uncompressed = [s for s in accepted if not s.is_compressed]
    if not syntax.is_compressed:
        if any(s.is_little_endian == syntax.is_little_endian for s in uncompressed):
            return ds  # pynetdicom converts explicit <-> implicit, deflated <-> inflated
        if uncompressed and not syntax.is_little_endian:
            try:
                return little_endian(ds)
            except Exception as exc:
                raise Unsendable(f"stored as {_name(syntax)}, which the requester does not "
                                 f"accept, and it cannot be converted: {exc}") from exc
    elif any(s.is_little_endian for s in uncompressed):
        try:
            # To Explicit VR Little Endian, the same object: its SOP Instance UID kept.
            ds.decompress(generate_instance_uid=False)
        except Exception as exc:
            raise Unsendable(f"stored as {_name(syntax)}, which the requester does not "
                             f"accept, and it cannot be decompressed: {exc}") from exc
        return ds
    raise Unsendable(
        f"stored as {_name(syntax)}; the requester accepted only "
        f"{', '.join(_name(s) for s in accepted)} for {_name(instance.sop_class_uid)}, "
        f"which the archive cannot convert it to")


# Values of these VRs are words of this many bytes, in the dataset's byte order.
_WORDS = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def little_endian(ds: Dataset) -> Dataset:
    """A big endian dataset as Explicit VR Little Endian: pydicom re-encodes the values it
    decodes; the words of OW, OF, OL, OD and OV values (pixel data) are swapped here."""
    for element in ds.iterall():  # every element decoded from its raw bytes
        size = _WORDS.get(element.VR)
        if size and isinstance(element.value, bytes) and len(element.value) % size == 0:
            element.value = numpy.frombuffer(element.value, dtype=f">u{size}").astype(
                f"<u{size}").tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.set_original_encoding(False, True, ds.original_character_set)
    return ds


@dataclass
class Outgoing:
    """The association C-STORE sub-operations go over: the requester's own (C-GET), or
    the one pynetdicom opens to the move destination (C-MOVE, set once it is accepted)."""

    assoc: Association | None = None


def _remember(event: Event, outgoing: Outgoing) -> None:
    """EVT_ACCEPTED of a C-MOVE's sub-association."""
    outgoing.assoc = event.assoc


def _sub_operations(
    event: Event, session: Session, operation: str, instances: Matches,
    outgoing: Outgoing,
) -> Iterator[tuple[int, Dataset | None]]:
    failed: dict[str, dict[str, str]] = {}  # study -> SOP Instance UID -> cause
    converted: dict[str, dict[str, str]] = {}  # study -> SOP Instance UID -> from -> to
    as_stored = stored_send.installed()
    syntaxes: dict[str, list[UID]] = {}  # SOP class -> what the requester accepted for it
    remaining = iter(instances)
    # What read_ahead made of the next instance, or why it could not fetch one.
    ahead: collections.deque[tuple[Stored, Dataset | Unsendable] | Exception] = (
        collections.deque())
    dataset: Dataset | None = None

    def made(instance: Stored) -> Dataset | Unsendable:
        """The instance's dataset, or the Unsendable that says why there is none."""
        accepted = syntaxes.get(instance.sop_class_uid)
        if accepted is None:  # once per SOP class: a getscu association accepts ~100
            accepted = syntaxes[instance.sop_class_uid] = accepted_syntaxes(
                outgoing.assoc, instance.sop_class_uid) if outgoing.assoc is not None else []
        try:
            return prepare(instance, accepted, as_stored=as_stored)
        except Unsendable as exc:
            return exc

    def read_ahead() -> None:
        """The next instance made, and its first bytes read, while the peer answers the
        sub-operation just sent (dimse.direct_send.exchange calls it then). What goes
        wrong is raised, or refused, at that instance's turn, as without reading ahead."""
        if ahead:
            return
        try:
            instance = next(remaining, None)
            if instance is None:
                return
            upcoming = made(instance)
        except Exception as exc:
            ahead.append(exc)
            return
        if isinstance(upcoming, stored_send.StoredDataset) and outgoing.assoc is not None:
            try:
                upcoming.read_first(outgoing.assoc.dimse.maximum_pdu_size)
            except Exception as exc:
                upcoming.close()
                upcoming = Unsendable(f"the stored object cannot be read: {exc}")
        ahead.append((instance, upcoming))

    # A C-MOVE's sub-association: its reactor stays paused from one object to the next.
    held = (outgoing.assoc if as_stored and outgoing.assoc is not event.assoc else None)
    if held is not None:
        stored_send.hold_reactor(held, True)
    try:
        while True:
            if ahead:
                entry = ahead.popleft()
                if isinstance(entry, Exception):  # the next instance could not be made
                    raise entry
                instance, result = entry
            else:
                following = next(remaining, None)
                if following is None:
                    break
                instance, result = following, made(following)
            dataset = result if isinstance(result, Dataset) else None
            if event.is_cancelled:
                yield Status.CANCEL, None
                return
            if isinstance(result, Unsendable):
                log.warning("%s of %s to %s: %s", operation, instance.sop_instance_uid,
                            session.calling_ae, result)
                failed.setdefault(instance.study_instance_uid, {})[
                    instance.sop_instance_uid] = str(result)
                # pynetdicom fails the sub-operation of a dataset without a transfer syntax
                # and lists it among the failed SOP instances of the final response.
                dataset = _unsendable(instance)
            elif instance.transfer_syntax_uid not in syntaxes[instance.sop_class_uid]:
                assert outgoing.assoc is not None and dataset is not None
                converted.setdefault(instance.study_instance_uid, {})[
                    instance.sop_instance_uid] = _conversion(outgoing.assoc, instance,
                                                             dataset)
            if isinstance(dataset, stored_send.StoredDataset):
                dataset.meanwhile = read_ahead
            yield Status.PENDING, dataset
    finally:
        # A stored object not sent (an abort, a cancel) still has its blob open, as has
        # one read ahead.
        for entry in ahead:
            if isinstance(entry, tuple) and isinstance(entry[1], stored_send.StoredDataset):
                entry[1].close()
        if isinstance(dataset, stored_send.StoredDataset):
            dataset.close()
        if outgoing.assoc is not None:
            if held is not None:
                stored_send.hold_reactor(held, False)
            direct_send.look_again(outgoing.assoc)  # the requester's next request
    for study_uid, causes in failed.items():
        record(AuditAction.RETRIEVE, session.actor,
               Target("study", study_uid, study_uid=study_uid), Outcome.FAILED,
               reason=f"{len(causes)} objects could not be sent",
               detail={"operation": operation, "failed": causes})
    for study_uid, conversions in converted.items():
        record(AuditAction.RETRIEVE, session.actor,
               Target("study", study_uid, study_uid=study_uid), Outcome.ALLOWED,
               reason=f"{len(conversions)} objects were converted: the requester accepted "
                      f"none of the transfer syntaxes they are stored in",
               detail={"operation": operation, "converted": conversions})


def _conversion(assoc: Association, instance: Stored, dataset: Dataset) -> str:
    """"stored syntax -> syntax sent" of an object that cannot go as it is stored."""
    syntax = UID(dataset.file_meta.TransferSyntaxUID)
    try:
        # The context pynetdicom's send_c_store picks for it, converting.
        context = assoc._get_valid_context(instance.sop_class_uid, syntax, "scu",
                                           allow_conversion=True)
        sent = str(context.transfer_syntax[0])
    except ValueError:
        sent = str(syntax)
    return f"{instance.transfer_syntax_uid} -> {sent}"


def _audit(session: Session, operation: str, instances: QuerySet[Instance],
           detail: dict[str, Any]) -> int:
    """One entry per study about to be sent; returns how many instances match."""
    per_study: dict[int, tuple[Target, int]] = {}
    for instance in instances.only(
        "pk", "series__study__study_instance_uid", "series__study__patient__patient_id",
        "series__study__patient__issuer",
    ).iterator(chunk_size=2000):
        study = instance.series.study
        target, n = per_study.get(study.pk, (Target.study(study), 0))
        per_study[study.pk] = (target, n + 1)
    total = sum(n for _, n in per_study.values())
    targets = [t for t, _ in per_study.values()]
    record(AuditAction.RETRIEVE, session.actor, targets or None, Outcome.ALLOWED,
           detail={"operation": operation, "instances": total, **detail})
    return total


def _identifier(event: Event) -> Dataset:
    try:
        return event.identifier
    except Exception as exc:
        raise IdentifierError(f"the identifier cannot be decoded: {exc}") from exc


def handle_get(event: Event, listener: Listener) -> Iterator[Any]:
    """EVT_C_GET: the matches go back over the peer's own association."""
    session = listener.session(event.assoc, caught_up=True)
    decision = decide_peer(session.peer if session else None, AuditAction.RETRIEVE,
                           allow_unknown=listener.allow_unknown_peers)
    if session is None or not decision:
        if session is not None:
            record(AuditAction.RETRIEVE, session.actor, None, Outcome.DENIED,
                   reason=decision.why, detail={"operation": "C-GET"})
        yield 1
        yield Status.NOT_AUTHORISED, _failed()
        return
    try:
        identifier = _identifier(event)
        instances = matching_instances(
            identifier, str(event.request.AffectedSOPClassUID),
            policies.visible_studies(principal_for(
                session.peer, allow_unknown=listener.allow_unknown_peers)))
    except IdentifierError as exc:
        record(AuditAction.RETRIEVE, session.actor, None, Outcome.FAILED, reason=str(exc),
               detail={"operation": "C-GET"})
        yield 1
        yield Status.RETRIEVE_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, _failed()
        return
    to_send = stored(instances)
    _audit(session, "C-GET", instances, {"level": str(identifier.QueryRetrieveLevel)})
    yield len(to_send)
    yield from _sub_operations(event, session, "C-GET", to_send, Outgoing(event.assoc))


def _contexts(instances: QuerySet[Instance]) -> list[PresentationContext]:
    """One presentation context per stored SOP class and transfer syntax, so every object
    can go out in the syntax it was stored in, or, if the destination prefers, as another
    uncompressed syntax (a compressed object is then decompressed, see :func:`prepare`)."""
    pairs = sorted(set(instances.order_by().values_list("sop_class_uid", "transfer_syntax_uid")))
    if len(pairs) > MAX_REQUESTED_CONTEXTS:
        log.warning("C-MOVE of %d SOP class and syntax pairs: only %d presentation contexts "
                    "can be proposed", len(pairs), MAX_REQUESTED_CONTEXTS)
    contexts = []
    for sop_class, syntax in pairs[:MAX_REQUESTED_CONTEXTS]:
        stored = UID(syntax or ExplicitVRLittleEndian)
        syntaxes: list[str | UID] = [stored]
        syntaxes += [s for s in UNCOMPRESSED if s != stored]
        contexts.append(build_context(sop_class, syntaxes))
    return contexts


class Refused(Exception):
    """The peer may not move; pynetdicom answers with a failure before any sub-operation."""


def handle_move(event: Event, listener: Listener) -> Iterator[Any]:
    """EVT_C_MOVE: the matches go to a configured peer over a new association."""
    session = listener.session(event.assoc, caught_up=True)
    move_destination = str(event.move_destination or "").strip()
    detail: dict[str, Any] = {"operation": "C-MOVE", "destination": move_destination}
    decision = decide_peer(session.peer if session else None, AuditAction.RETRIEVE,
                           allow_unknown=listener.allow_unknown_peers)
    if session is None or not decision:
        if session is not None:
            record(AuditAction.RETRIEVE, session.actor, None, Outcome.DENIED,
                   reason=decision.why, detail=detail)
        # pynetdicom has no way to yield a refusal before the destination: an exception
        # here makes it answer with a failure status (0xC514) and send nothing.
        raise Refused(decision.why or "no session")
    target = find_destination(move_destination)
    if not may_receive(target):
        record(AuditAction.RETRIEVE, session.actor, None, Outcome.DENIED,
               reason="move destination is not a known peer with a port", detail=detail)
        yield None, None  # pynetdicom answers Move Destination Unknown (0xA801)
        return
    assert target is not None and target.port is not None
    try:
        identifier = _identifier(event)
        instances = matching_instances(
            identifier, str(event.request.AffectedSOPClassUID),
            policies.visible_studies(principal_for(
                session.peer, allow_unknown=listener.allow_unknown_peers)))
    except IdentifierError as exc:
        record(AuditAction.RETRIEVE, session.actor, None, Outcome.FAILED, reason=str(exc),
               detail=detail)
        yield target.host, target.port
        yield 1
        yield Status.RETRIEVE_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, _failed()
        return
    outgoing = Outgoing()
    yield target.host, target.port, {
        "contexts": _contexts(instances),
        "evt_handlers": [(evt.EVT_CONN_OPEN, handlers.tune_socket, [listener]),
                         (evt.EVT_ACCEPTED, _remember, [outgoing])],
    }
    to_send = stored(instances)
    _audit(session, "C-MOVE", instances,
           {**detail, "level": str(identifier.QueryRetrieveLevel)})
    yield len(to_send)
    yield from _sub_operations(event, session, "C-MOVE", to_send, outgoing)
