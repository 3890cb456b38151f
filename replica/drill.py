"""The restore drill: prove, on a random sample, that studies can be brought back from the
replica.

A verified copy says the object could be read back once, when it was written; a drill says
it still can, now, with the keys configured now. It picks a random sample of studies with
verified replica copies, downloads each of their verified copies into a scratch directory
(removed afterwards), decrypts it with the envelope in the object's own metadata, as a
restore without the database would, and checks every byte against the SHA-256 and size on
record. Each drill leaves a :class:`~replica.models.DrillReport`; each failed object is
listed on it, logged at ERROR and queued for a fixity check of its copy
(``replica.tasks.verify_replica_copy``), which tells an outage from damage, raises the
integrity alert and repairs the copy from the local tier.

Objects are streamed (a few segments in memory per download) and each plaintext file is
deleted once checked, so neither memory nor the scratch space grows with the sample.
Copies not yet verified are not drilled: the copies admin shows them as replication lag.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import random
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from imaging import blobs

from . import payload, store
from .crypto import Envelope, InvalidObject
from .keys import KeyRing
from .models import Copy, DrillReport

log = logging.getLogger(__name__)

#: Downloads at once: a drill of small objects waits on round trips, not on bandwidth.
DOWNLOADS = 4
#: Failures listed on a report (all of them are counted).
MAX_LISTED = 1000
#: A drill due by the beat schedule may take this long before the admin index warns.
GRACE = datetime.timedelta(hours=1)


class DrillRefused(RuntimeError):
    """No drill can run (no replica configured, or a key ring that cannot be read)."""


@dataclass(frozen=True)
class Target:
    """One replica copy to bring back, as read from its row before any download starts
    (download threads never touch the database)."""

    copy_id: int
    instance_id: int
    key: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Checked:
    target: Target
    size: int
    error: str = ""


def sample(studies: int, byte_limit: int | None = None,
           rng: random.Random | None = None) -> list[int]:
    """Ids of up to ``studies`` random studies with verified replica copies whose copies
    add up to at most ``byte_limit`` bytes (a study larger than the limit on its own is
    passed over for a smaller one)."""
    rng = rng or random.SystemRandom()
    sizes = dict(Copy.objects.filter(tier=Copy.Tier.REPLICA, state=Copy.State.VERIFIED)
                 .values_list("instance__series__study_id")
                 .annotate(total=Sum("instance__size_bytes")).order_by())
    order = list(sizes)
    rng.shuffle(order)
    chosen: list[int] = []
    total = 0
    for study_id in order:
        if len(chosen) >= studies:
            break
        size = sizes[study_id] or 0
        if byte_limit is not None and total + size > byte_limit:
            continue
        chosen.append(study_id)
        total += size
    return chosen


def targets(study_ids: Sequence[int]) -> list[Target]:
    return [Target(pk, instance_id, key, digest, size) for pk, instance_id, key, digest, size
            in Copy.objects.filter(tier=Copy.Tier.REPLICA, state=Copy.State.VERIFIED,
                                   instance__series__study_id__in=list(study_ids))
            .order_by("pk")
            .values_list("pk", "instance_id", "key", "instance__sha256",
                         "instance__size_bytes")]


def check(target: Target, ring: KeyRing, scratch: Path) -> Checked:
    """Bring one object back into ``scratch`` and compare it with the record; the reason
    it failed, if it did, in ``error``. The plaintext file is removed either way."""
    path = scratch / f"{target.copy_id}.dcm"
    size = 0
    try:
        found = store.client().get_object(Bucket=store.bucket(), Key=target.key)
        body = found["Body"]
        digest = hashlib.sha256()
        try:
            envelope = Envelope.from_metadata(found.get("Metadata", {}))
            reader = payload.reader(body, ring, envelope)
            with path.open("wb") as out:
                while chunk := reader.read(blobs.CHUNK_SIZE):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
        finally:
            body.close()
        if size != target.size or digest.hexdigest() != target.sha256:
            return Checked(target, size, f"decrypted to {size} bytes with SHA-256 "
                           f"{digest.hexdigest()}, not {target.size} bytes with "
                           f"{target.sha256} on record")
    except InvalidObject as exc:
        return Checked(target, size, str(exc))
    except KeyError as exc:  # its key id is not in the ring
        return Checked(target, size, str(exc.args[0] if exc.args else exc))
    except store.StoreError as exc:
        return Checked(target, size, f"could not download it: {exc}")
    except Exception as exc:  # the drill still ends with a report that says what broke
        return Checked(target, size, f"{type(exc).__name__}: {exc}")
    finally:
        path.unlink(missing_ok=True)
    return Checked(target, size)


def run(studies: int | None = None, byte_limit: int | None = None,
        ring: KeyRing | None = None, rng: random.Random | None = None) -> DrillReport:
    """One drill over a random sample (``RESTORE_DRILL_SAMPLE`` studies, at most
    ``RESTORE_DRILL_MAX_BYTES`` by default); returns its saved report.

    A drill with nothing to check fails: it has proven nothing.
    """
    if not store.configured():
        raise DrillRefused("no replica is configured (REPLICA_URL)")
    try:
        ring = ring or KeyRing.from_settings()
    except Exception as exc:
        raise DrillRefused(f"the replica keys cannot be read: {exc}") from exc
    studies = settings.RESTORE_DRILL_SAMPLE if studies is None else studies
    if byte_limit is None:
        byte_limit = settings.RESTORE_DRILL_MAX_BYTES
    report = DrillReport.objects.create(started=timezone.now())
    clock = time.monotonic()
    chosen = sample(studies, byte_limit, rng)
    todo = targets(chosen)
    failures: list[dict[str, object]] = []
    checked = 0
    total = 0
    with tempfile.TemporaryDirectory(prefix="restore-drill-") as scratch, \
            ThreadPoolExecutor(max_workers=DOWNLOADS) as pool:
        for result in pool.map(lambda t: check(t, ring, Path(scratch)), todo):
            checked += 1
            total += result.size
            if result.error:
                log.error("restore drill: replica copy %s of instance %s (%s) failed: %s",
                          result.target.copy_id, result.target.instance_id,
                          result.target.key, result.error)
                failures.append({"instance": result.target.instance_id,
                                 "copy": result.target.copy_id, "key": result.target.key,
                                 "reason": result.error[:2000]})
    if not todo:
        failures.append({"instance": None, "copy": None, "key": "",
                         "reason": "nothing to check: no study with verified replica "
                                   "copies fits the sample"})
        log.error("restore drill: nothing to check, no study with verified replica copies "
                  "within %s bytes", byte_limit)
    report.finished = timezone.now()
    report.studies = len(chosen)
    report.objects_checked = checked
    report.bytes_checked = total
    report.seconds = time.monotonic() - clock
    report.failure_count = len(failures)
    report.failures = failures[:MAX_LISTED]
    report.ok = not failures
    report.save()
    _queue_checks([int(f["copy"]) for f in failures if isinstance(f["copy"], int)],
                  report.started)
    return report


def _queue_checks(copy_ids: list[int], drilled: datetime.datetime) -> None:
    """A failed object is checked again by the fixity path (``replica.fixity.check_copy``):
    that check tells an outage from damage, raises the integrity alert and repairs the copy
    from the local tier. Queued, so a drill of many failures ends with its report first."""
    from .tasks import verify_replica_copy

    for copy_id in copy_ids:
        verify_replica_copy.delay(copy_id, drilled.isoformat())


@dataclass(frozen=True)
class Status:
    """What the admin index says about drills."""

    last_good: DrillReport | None
    last: DrillReport | None
    overdue: bool  # no good drill within its period (or none ever) while a replica is on


def status(now: datetime.datetime | None = None) -> Status:
    now = now or timezone.now()
    last_good = DrillReport.objects.filter(ok=True).order_by("-finished").first()
    last = DrillReport.objects.exclude(finished=None).order_by("-finished").first()
    period = datetime.timedelta(seconds=settings.RESTORE_DRILL_INTERVAL_SECONDS)
    overdue = store.configured() and (
        last_good is None or last_good.finished is None
        or now - last_good.finished > period + GRACE)
    return Status(last_good, last, overdue)
