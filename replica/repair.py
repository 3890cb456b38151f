"""Repair from the good copy: a bad local file is rewritten from the verified replica copy,
a bad replica object is uploaded again from the good local file.

Nothing replaces anything before it has been proven: the replica's plaintext is hashed
against the instance's SHA-256 on its way into a temporary file, and only then moved over
the local blob; a damaged local file is kept under the quarantine prefix (as
``manage.py reconcile`` keeps it), never simply overwritten. The local file is re-hashed
before replication uploads it again (which reads the new object back before calling it
verified). When neither copy is good nothing
is touched and the alert stays open, saying so. Every attempt is one audit entry.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from django.core.files import File
from django.core.files.storage import FileSystemStorage
from django.db.models import Q
from django.utils import timezone

from audit.models import AuditAction, Outcome
from audit.trail import Actor, Target, record
from imaging import blobs
from imaging.fixity import StorageUnavailable
from imaging.models import Instance

from . import listing, replicate, store
from .keys import KeyRing
from .models import Copy, IntegrityAlert
from .readback import Problem, read_local, read_replica

ACTOR = Actor.system("fixity repair")


@dataclass(frozen=True)
class Result:
    repaired: bool
    note: str
    #: The other copy turned out bad too (its own alert is opened by the caller).
    other: Problem | None = None
    kept: str = ""  # where the damaged local file was kept, if there was one
    source: str = ""  # the replica object a local file was restored from


def repair(alert: IntegrityAlert, ring: KeyRing) -> Result:
    """Try to replace the alert's copy from the other tier, record the outcome on the alert
    and in the audit trail."""
    instance = Instance.all_objects.select_related("series__study__patient").get(
        pk=alert.instance_id)
    if alert.tier == Copy.Tier.LOCAL:
        source, result = Copy.Tier.REPLICA, restore_local(instance, ring)
    else:
        source, result = Copy.Tier.LOCAL, _repair_replica(instance, ring)
    detail = f"{alert.detail}\n{result.note}".strip()
    if result.repaired:
        now = timezone.now()
        IntegrityAlert.objects.filter(pk=alert.pk).update(
            repaired_at=now, repaired_from=source, detail=detail)
        alert.repaired_at, alert.repaired_from = now, source
    else:
        IntegrityAlert.objects.filter(pk=alert.pk).update(detail=detail)
    alert.detail = detail
    record(AuditAction.REPAIR, ACTOR, Target.instance(instance),
           Outcome.ALLOWED if result.repaired else Outcome.FAILED, reason=result.note,
           detail={"alert": alert.pk, "tier": alert.tier, "kind": alert.kind,
                   "from": source if result.repaired else "", "kept_as": result.kept})
    return result


def restore_local(instance: Instance, ring: KeyRing) -> Result:
    """The instance's file (damaged or missing) rewritten from its verified replica copy,
    proven before and after it replaces anything; what was there is kept in quarantine.
    Used by the fixity repair and by ``manage.py reconcile --repair``."""
    copy = (Copy.objects.select_related("instance")
            .filter(instance=instance, tier=Copy.Tier.REPLICA, state=Copy.State.VERIFIED)
            .first())
    if copy is None:
        return Result(False, "not repaired: there is no verified replica copy to restore it from")
    kept = ""
    try:
        with _replacing(instance.blob_key) as (staged, replace):
            problem = read_replica(copy, ring, sink=staged)
            if problem is None:
                kept = replace()
    except StorageUnavailable as exc:
        return Result(False, f"not repaired now: {exc}; the next check tries again")
    if problem is not None:
        return Result(False, "not repaired: the replica copy is not good either "
                      f"({problem.reason})", other=problem)
    try:
        after = read_local(instance)
    except StorageUnavailable as exc:
        return Result(False, f"rewritten from the replica, but it cannot be read back now: "
                      f"{exc}")
    if after is not None:
        return Result(False, f"rewritten from the replica, but it reads back wrong: "
                      f"{after.reason}")
    now = timezone.now()
    Instance.all_objects.filter(pk=instance.pk).update(fixity_ok=True, fixity_checked=now)
    Copy.objects.filter(instance=instance, tier=Copy.Tier.LOCAL).update(
        key=instance.blob_key, state=Copy.State.WRITTEN, sha256=instance.sha256,
        size=instance.size_bytes, written_at=now, verified_at=now, last_error="")
    return Result(True, "repaired: rewritten from the verified replica copy, byte for byte "
                  "(SHA-256 checked before it replaced the file)"
                  + (f"; the damaged file is kept as {kept}" if kept else ""), kept=kept,
                  source=copy.key)


@contextlib.contextmanager
def _replacing(key: str) -> Iterator[tuple[IO[bytes], Callable[[], str]]]:
    """A temporary file to stage the good bytes in, and a function that puts them under
    ``key`` after keeping what is there now under the quarantine prefix (it returns that
    name; empty when the file was missing). On local disk the damaged file is hard-linked
    into quarantine and the temporary file, beside the blob, renamed over it (atomic: the
    key always holds either the old file or the whole new one); elsewhere both are copies."""
    storage = blobs.storage()
    if isinstance(storage, FileSystemStorage):
        target = Path(storage.path(key))
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = tempfile.NamedTemporaryFile(dir=target.parent, prefix=".repair-",
                                             delete=False)

        def replace() -> str:
            staged.flush()
            os.fsync(staged.fileno())
            if storage.file_permissions_mode is not None:
                os.chmod(staged.name, storage.file_permissions_mode)
            kept = ""
            if target.exists():
                kept = quarantine_name(key)
                try:
                    blobs.hard_link(target, storage.path(kept))
                except OSError:  # no links on this file system: a copy
                    shutil.copy2(target, storage.path(kept))
            os.replace(staged.name, target)
            return kept

        try:
            yield staged, replace
        finally:
            staged.close()
            Path(staged.name).unlink(missing_ok=True)
        return

    with tempfile.TemporaryFile() as spooled:

        def rewrite() -> str:
            spooled.flush()
            spooled.seek(0)
            kept = ""
            if storage.exists(key):
                kept = quarantine_name(key)
                with blobs.open_blob(key) as damaged:
                    if storage.save(kept, File(damaged, name=kept)) != kept:
                        raise RuntimeError(f"storage renamed the quarantined {kept!r}")
                storage.delete(key)
            saved = storage.save(key, File(spooled, name=key))
            if saved != key:
                storage.delete(saved)
                raise RuntimeError(f"storage renamed blob {key!r} to {saved!r}")
            return kept

        yield spooled, rewrite


def quarantine_name(key: str) -> str:
    """Where a damaged or orphan file is kept: under the quarantine prefix (``manage.py reconcile``
    never takes it for an orphan), ``.1``, ``.2``... if one was kept there before."""
    name = f"{listing.quarantine_prefix()}{key}"
    candidate, n = name, 1
    while blobs.storage().exists(candidate):
        candidate, n = f"{name}.{n}", n + 1
    return candidate


def _repair_replica(instance: Instance, ring: KeyRing) -> Result:
    try:
        problem = read_local(instance)
    except StorageUnavailable as exc:
        return Result(False, f"not repaired now: {exc}; the next check tries again")
    if problem is not None:
        return Result(False, "not repaired: the local file is not good either "
                      f"({problem.reason})", other=problem)
    copy, _ = Copy.objects.get_or_create(instance=instance, tier=Copy.Tier.REPLICA)
    # Back to the backlog, unless a worker is replicating it right now; replication then
    # writes a new object and reads it back. The old key is forgotten, as reconcile does,
    # so a damaged object is kept (an orphan, for ``reconcile --quarantine``), not deleted.
    Copy.objects.filter(pk=copy.pk).filter(
        Q(state=Copy.State.VERIFIED) | Q(claimed_until__isnull=True)
        | Q(claimed_until__lte=timezone.now())).update(
        state=Copy.State.PENDING, claimed_until=None, queued_until=None, key="")
    attempt = replicate.replicate_copy(copy.pk, ring)
    if attempt.outcome == replicate.Outcome.VERIFIED:
        try:
            kept = copy.key if copy.key and store.head(copy.key) is not None else ""
        except store.StoreError:  # the note only; the repair is done
            kept = ""
        return Result(True, "repaired: uploaded again from the verified local file as a new "
                      "object, read back and decrypted"
                      + (f"; the damaged object is kept as {kept}" if kept else ""))
    return Result(False, f"not repaired: the upload from the local file did not complete "
                  f"({attempt.outcome.value}{': ' + attempt.error if attempt.error else ''}); "
                  "the copy stays in the replication backlog")
