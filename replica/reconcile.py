"""Reconciliation: the index compared with what each tier holds.

Two kinds of problem: an object the index expects that its tier does not hold (missing,
or, with ``verify``, holding other bytes: damaged), and an object no row refers to (an
orphan: an ingest killed between its blob and its commit, a file copied in by hand).
Orphans younger than ``min_age`` seconds are left out: their ingest may still commit.

Repairs never lose data. A missing or damaged local object is restored from a verified
replica copy, decrypted and checked against the instance's SHA-256 before it is written
(a damaged file is moved to the quarantine prefix first, never overwritten). A missing or
damaged replica object is queued for replication again (its copy back to pending). An
orphan is only ever moved to the quarantine prefix, and only when asked. A temporary file
that a recall or a repair killed mid-way left beside the blobs (``.recall-*.part``,
``.repair-*``: a partial copy of an object whose whole copy is elsewhere) is deleted on
``repair``. Every repair is on the audit trail, through the one audit call.
"""

from __future__ import annotations

import enum
import functools
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.core.files import File
from django.db import transaction
from django.utils import timezone

from audit.models import AuditAction
from audit.models import Outcome as AuditOutcome
from audit.trail import Actor, Target, record
from imaging import blobs, fixity
from imaging.models import Instance

from . import copies, listing, repair, store
from .crypto import Envelope, InvalidObject
from .keys import KeyRing
from .models import Copy

log = logging.getLogger(__name__)

ACTOR = Actor.system("reconcile")


class Tier(enum.StrEnum):
    LOCAL = "local"
    REPLICA = "replica"


class Kind(enum.StrEnum):
    MISSING = "missing"  # the index expects it, the tier does not hold it
    DAMAGED = "damaged"  # held, but not the bytes on record (found by verify)
    UNREADABLE = "unreadable"  # could not be read now (an outage): nothing concluded
    UNENROLLED = "unenrolled"  # an instance with no replica copy at all
    ORPHAN = "orphan"  # held, but no row refers to it
    LEFTOVER = "leftover"  # a recall's or repair's unfinished temporary file


@dataclass
class Problem:
    tier: Tier
    kind: Kind
    key: str
    reason: str = ""
    instance_id: int | None = None
    repaired: str = ""  # what was done about it; empty: still a problem

    @property
    def solved(self) -> bool:
        return bool(self.repaired)


@dataclass
class ReconcileReport:
    checked: dict[Tier, int] = field(default_factory=dict)  # objects listed per tier
    verified: dict[Tier, int] = field(default_factory=dict)  # re-hashed and found good
    young: int = 0  # possible orphans left out: younger than min_age
    erasing: int = 0  # files of purged patients awaiting their deletion: not orphans
    problems: list[Problem] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """Nothing found, or everything found repaired."""
        return all(p.solved for p in self.problems)


@dataclass(frozen=True)
class Options:
    verify: bool = False
    repair: bool = False
    quarantine: bool = False
    min_age: float = 3600.0


def reconcile(tiers: Iterable[Tier], options: Options, ring: KeyRing | None = None,
              ) -> ReconcileReport:
    report = ReconcileReport()
    tiers = list(tiers)
    if (Tier.REPLICA in tiers or options.repair) and store.configured():
        ring = ring or KeyRing.from_settings()
    if Tier.LOCAL in tiers:
        _local(report, options, ring)
    if Tier.REPLICA in tiers:
        assert ring is not None
        _replica(report, options, ring)
    return report


# --- the local tier -----------------------------------------------------------------------


def _local(report: ReconcileReport, options: Options, ring: KeyRing | None) -> None:
    indexed = dict(Instance.all_objects.values_list("blob_key", "pk").iterator())
    erased = listing.awaiting_deletion()
    listed: set[str] = set()
    now = timezone.now()
    for key in listing.local_keys():
        listed.add(key)
        if key in indexed:
            if options.verify:
                _verify_local(report, key, indexed[key], options, ring)
            continue
        if key in erased:  # privacy.tasks.delete_pending_blobs deletes it; never kept
            report.erasing += 1
            continue
        try:
            young = listing.local_age(key, now) < options.min_age
        except FileNotFoundError:  # gone since it was listed (an ingest cleaning up)
            continue
        if young:
            report.young += 1
            continue
        if _leftover(key):
            report.problems.append(_remove_leftover(key, options))
            continue
        problem = Problem(Tier.LOCAL, Kind.ORPHAN, key,
                          "no instance refers to this object")
        if options.quarantine:
            try:
                problem.repaired = f"moved to {_quarantine_local(key)}"
            except (OSError, RuntimeError) as exc:
                problem.reason += f"; not quarantined: {exc}"
        report.problems.append(problem)
    report.checked[Tier.LOCAL] = len(listed)
    # Evicted on purpose (replica.evict): the verified replica copy is the object now.
    evicted = set(Copy.objects.filter(tier=Copy.Tier.LOCAL, state=Copy.State.EVICTED)
                  .values_list("instance__blob_key", flat=True))
    for key, pk in indexed.items():
        if key not in listed and key not in evicted:
            problem = Problem(Tier.LOCAL, Kind.MISSING, key, "the stored file is missing", pk)
            if options.repair:
                _restore_local(problem, ring)
            report.problems.append(problem)


def _leftover(key: str) -> bool:
    """A temporary file of ``replica.recall`` (``.recall-*.part``) or ``replica.repair``
    (``.repair-*``), by its name: both are made beside the blob they are for."""
    name = key.rsplit("/", 1)[-1]
    return (name.startswith(".recall-") and name.endswith(".part")) \
        or name.startswith(".repair-")


def _remove_leftover(key: str, options: Options) -> Problem:
    problem = Problem(Tier.LOCAL, Kind.LEFTOVER, key,
                      "a temporary file left by a recall or repair that did not finish")
    if not options.repair:
        return problem
    try:
        blobs.delete(key)
    except OSError as exc:
        problem.reason += f"; not deleted: {exc}"
        return problem
    problem.repaired = "deleted"
    record(AuditAction.DELETE, ACTOR, Target("object", key[:128]), AuditOutcome.ALLOWED,
           reason="reconcile: a temporary file left by an unfinished recall or repair",
           detail={"operation": "remove-leftover", "tier": Tier.LOCAL.value, "key": key})
    return problem


def _verify_local(report: ReconcileReport, key: str, pk: int, options: Options,
                  ring: KeyRing | None) -> None:
    try:
        result = fixity.check_instance(pk)
    except fixity.StorageUnavailable as exc:
        report.problems.append(Problem(Tier.LOCAL, Kind.UNREADABLE, key, str(exc), pk))
        return
    except Instance.DoesNotExist:  # deleted meanwhile
        return
    if result.ok:
        report.verified[Tier.LOCAL] = report.verified.get(Tier.LOCAL, 0) + 1
        return
    problem = Problem(Tier.LOCAL, Kind.DAMAGED, key, result.reason, pk)
    if options.repair:
        _restore_local(problem, ring)
    report.problems.append(problem)


def _restore_local(problem: Problem, ring: KeyRing | None) -> None:
    """The instance's bytes back under its key, from its verified replica copy
    (``replica.repair.restore_local``: proven before it replaces anything)."""
    assert problem.instance_id is not None
    instance = Instance.all_objects.select_related("series__study__patient").get(
        pk=problem.instance_id)
    if ring is None:
        problem.reason += "; no verified replica copy to restore it from"
        return
    result = repair.restore_local(instance, ring)
    if not result.repaired:
        problem.reason += f"; {result.note.removeprefix('not repaired: ')}"
        return
    problem.repaired = f"restored from the replica copy {result.source}"
    if result.kept:
        problem.repaired += f" (the damaged file moved to {result.kept})"
    record(AuditAction.STORE, ACTOR, Target.instance(instance), AuditOutcome.ALLOWED,
           reason=f"reconcile: {problem.kind.value} local object restored from the replica",
           detail={"operation": "restore-local", "key": instance.blob_key,
                   "from": result.source, "sha256": instance.sha256,
                   "damaged_moved_to": result.kept})


def _quarantine_local(key: str) -> str:
    """Move a local object under the quarantine prefix (copied, checked, then removed):
    returns where it went."""
    storage = blobs.storage()
    target = repair.quarantine_name(key)
    with blobs.open_blob(key) as source:
        digest, size = blobs.sha256(source)
        source.seek(0)
        saved = storage.save(target, File(source, name=target))
    with blobs.open_blob(saved) as moved:
        if blobs.sha256(moved) != (digest, size):
            raise RuntimeError(f"quarantined copy {saved} of {key} differs; {key} is kept")
    blobs.delete(key)
    record(AuditAction.DELETE, ACTOR, Target("object", key[:128]), AuditOutcome.ALLOWED,
           reason="reconcile: moved to quarantine, not deleted",
           detail={"operation": "quarantine", "tier": Tier.LOCAL.value, "key": key,
                   "moved_to": saved, "sha256": digest, "size": size})
    return saved


# --- the replica --------------------------------------------------------------------------


def _replica(report: ReconcileReport, options: Options, ring: KeyRing) -> None:
    expected: dict[str, Copy] = {
        c.key: c for c in Copy.objects.filter(
            tier=Copy.Tier.REPLICA, state__in=(Copy.State.WRITTEN, Copy.State.VERIFIED))
        .exclude(key="").iterator()}
    # A failed attempt's object (its attempt_key) is still the copy's: its next attempt
    # deletes it.
    referenced = {key for pair in Copy.objects.filter(tier=Copy.Tier.REPLICA)
                  .values_list("key", "attempt_key").iterator() for key in pair if key}
    listed: set[str] = set()
    now = timezone.now()
    for obj in listing.replica_objects():
        listed.add(obj.key)
        if obj.key in expected:
            if options.verify:
                _verify_replica(report, expected[obj.key], options, ring)
            continue
        if obj.key in referenced:
            continue
        if obj.age(now) < options.min_age:
            report.young += 1
            continue
        problem = Problem(Tier.REPLICA, Kind.ORPHAN, obj.key, "no copy refers to this object")
        if options.quarantine:
            try:
                problem.repaired = _quarantine_replica(obj.key)
            except (RuntimeError, *store.StoreError) as exc:
                problem.reason += f"; not quarantined: {exc}"
        report.problems.append(problem)
    report.checked[Tier.REPLICA] = len(listed)
    for key, copy in expected.items():
        if key not in listed:
            problem = Problem(Tier.REPLICA, Kind.MISSING, key, "the replica object is missing",
                              copy.instance_id)
            if options.repair:
                _requeue(copy, problem)
            report.problems.append(problem)
    unenrolled = list(Instance.all_objects.exclude(copies__tier=Copy.Tier.REPLICA)
                      .values_list("pk", "blob_key"))
    for pk, key in unenrolled:
        report.problems.append(Problem(Tier.REPLICA, Kind.UNENROLLED, key,
                                       "the instance has no replica copy", pk))
    if unenrolled and options.repair:
        ids = copies.enrol_existing()
        transaction.on_commit(functools.partial(copies.dispatch, ids), robust=True)
        for problem in report.problems[-len(unenrolled):]:
            problem.repaired = "queued for replication"
        record(AuditAction.STORE, ACTOR, None, AuditOutcome.ALLOWED,
               reason="reconcile: instances without a replica copy queued for replication",
               detail={"operation": "enrol-replica", "instances": [pk for pk, _ in unenrolled]})


def _verify_replica(report: ReconcileReport, copy: Copy, options: Options,
                    ring: KeyRing) -> None:
    try:
        with listing.decrypted(copy.key, _envelope(copy), ring) as plain:
            good = plain.sha256 == copy.sha256
            reason = "" if good else (f"decrypts to SHA-256 {plain.sha256}, "
                                      f"not {copy.sha256}")
    except (InvalidObject, KeyError, ValueError) as exc:
        good, reason = False, str(exc).strip('"')
    except store.StoreError as exc:
        report.problems.append(Problem(Tier.REPLICA, Kind.UNREADABLE, copy.key, str(exc),
                                       copy.instance_id))
        return
    if good:
        report.verified[Tier.REPLICA] = report.verified.get(Tier.REPLICA, 0) + 1
        Copy.objects.filter(pk=copy.pk).update(verified_at=timezone.now())
        return
    problem = Problem(Tier.REPLICA, Kind.DAMAGED, copy.key, reason, copy.instance_id)
    if options.repair:
        _requeue(copy, problem)
    report.problems.append(problem)


def _requeue(copy: Copy, problem: Problem) -> None:
    """The copy back to pending, and queued once this commits. Its key is forgotten, so the
    next upload goes to a fresh key and never deletes the old object (a damaged one is then
    an orphan, for ``--quarantine``)."""
    Copy.objects.filter(pk=copy.pk).update(
        state=Copy.State.PENDING, key="", verified_at=None, claimed_until=None,
        queued_until=None,
        last_error=f"reconcile: {problem.kind.value} object {copy.key}"[:2000])
    transaction.on_commit(functools.partial(copies.dispatch, [copy.pk]), robust=True)
    problem.repaired = "queued for replication again"
    instance = Instance.all_objects.select_related("series__study__patient").get(
        pk=copy.instance_id)
    record(AuditAction.STORE, ACTOR, Target.instance(instance), AuditOutcome.ALLOWED,
           reason=f"reconcile: {problem.kind.value} replica object queued for replication",
           detail={"operation": "requeue-replica", "key": copy.key, "copy": copy.pk})


def _quarantine_replica(key: str) -> str:
    """Move a replica object under the quarantine prefix, metadata (its envelope) and all:
    copied server-side, checked, then removed."""
    s3 = store.client()
    target = listing.quarantine_prefix() + key
    s3.copy_object(Bucket=store.bucket(), Key=target,
                   CopySource={"Bucket": store.bucket(), "Key": key})
    source, moved = store.head(key), store.head(target)
    if source is None or moved is None or source["size"] != moved["size"] \
            or source["metadata"] != moved["metadata"]:
        raise RuntimeError(f"quarantined copy {target} of {key} differs; {key} is kept")
    store.delete(key)
    record(AuditAction.DELETE, ACTOR, Target("object", key[:128]), AuditOutcome.ALLOWED,
           reason="reconcile: moved to quarantine, not deleted",
           detail={"operation": "quarantine", "tier": Tier.REPLICA.value, "key": key,
                   "moved_to": target, "size": moved["size"]})
    return f"moved to {target}"


def _envelope(copy: Copy) -> Envelope:
    return Envelope(copy.key_id, bytes(copy.wrapped_key), bytes(copy.nonce_prefix),
                    copy.segment_size or 0, copy.packing)
