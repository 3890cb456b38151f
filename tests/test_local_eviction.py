"""Eviction from the local tier: a local file goes only when the replica holds a verified
copy with the instance's SHA-256, after the clinic's ``evict_local_after_days`` or, on a
local file system, oldest first while free space is below the watermark, and only as much
as the shortfall. Checked in the UPDATE that marks the copy, so a recall racing it wins.
"""

from __future__ import annotations

import contextlib
import datetime
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.files.storage import FileSystemStorage
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from accounts.models import Clinic
from imaging import blobs
from imaging.models import Instance
from portal.celery import app
from portal.exclusive import exclusive
from replica import evict, tasks
from replica.models import Copy
from tests import replica_support
from tests.conftest import story_clinic
from tests.replica_support import evict_all, spills, store_replicated
from tests.s3_support import s3_endpoint  # noqa: F401 - a fixture

replica = replica_support.replica

pytestmark = pytest.mark.django_db


def _age(instances: list[Instance], days: float) -> None:
    """Make these local copies as old as if they had been stored ``days`` ago."""
    Copy.objects.filter(instance__in=instances, tier=Copy.Tier.LOCAL).update(
        written_at=timezone.now() - datetime.timedelta(days=days))


def _local_state(instance: Instance) -> str:
    return Copy.objects.get(instance=instance, tier=Copy.Tier.LOCAL).state


def _on_disk(dicom_storage: Any, instance: Instance) -> bool:
    return bool((dicom_storage / instance.blob_key).exists())


@pytest.fixture
def stored(replica, ct_study, django_capture_on_commit_callbacks) -> list[Instance]:
    """Four of paula's slices at Clínica Sul, each with a verified replica copy."""
    return store_replicated(ct_study[1][:4], django_capture_on_commit_callbacks)


def test_a_clinic_evicts_local_copies_older_than_its_setting_and_keeps_the_rest(
    stored, dicom_storage
):
    Clinic.objects.filter(pk=story_clinic().pk).update(evict_local_after_days=30)
    old, recent = stored[:2], stored[2:]
    _age(old, 31)
    _age(recent, 29)

    report = evict.evict_local()

    assert (report.by_age, report.by_watermark) == (2, 0)
    assert report.bytes_freed == sum(i.size_bytes for i in old)
    for instance in old:
        assert not _on_disk(dicom_storage, instance)
        assert _local_state(instance) == Copy.State.EVICTED
    for instance in recent:
        assert _on_disk(dicom_storage, instance)
        assert _local_state(instance) == Copy.State.WRITTEN
    assert evict.evict_local().count == 0  # a second run has nothing left to do


def test_a_clinic_without_the_setting_never_evicts_by_age(stored, dicom_storage):
    _age(stored, 10_000)
    assert story_clinic().evict_local_after_days is None
    assert evict.evict_local().count == 0
    assert all(_on_disk(dicom_storage, i) for i in stored)


@pytest.mark.parametrize("state", [Copy.State.PENDING, Copy.State.WRITTEN, Copy.State.FAILED])
def test_a_replica_copy_not_yet_verified_keeps_the_local_file(stored, dicom_storage, state):
    Clinic.objects.filter(pk=story_clinic().pk).update(evict_local_after_days=1)
    _age(stored, 2)
    Copy.objects.filter(instance=stored[0], tier=Copy.Tier.REPLICA).update(state=state)
    report = evict.evict_local()
    assert report.count == 3
    assert _on_disk(dicom_storage, stored[0])
    assert _local_state(stored[0]) == Copy.State.WRITTEN


def test_a_replica_copy_of_another_hash_keeps_the_local_file(stored, dicom_storage):
    Clinic.objects.filter(pk=story_clinic().pk).update(evict_local_after_days=1)
    _age(stored, 2)
    Copy.objects.filter(instance=stored[1], tier=Copy.Tier.REPLICA).update(sha256="0" * 64)
    Copy.objects.filter(instance=stored[2], tier=Copy.Tier.LOCAL).update(sha256="0" * 64)
    evict.evict_local()
    assert _on_disk(dicom_storage, stored[1]) and _on_disk(dicom_storage, stored[2])
    assert not _on_disk(dicom_storage, stored[0]) and not _on_disk(dicom_storage, stored[3])


def test_an_eviction_checked_before_a_recall_or_repair_does_not_go_through_after_it(
    stored, dicom_storage
):
    """The check is the UPDATE itself: a copy recalled since it was picked (a newer
    written_at) or whose replica copy stopped being verified stays."""
    recalled, repaired = stored[:2]
    picked = {c.instance_id: c for c in Copy.objects.filter(
        instance__in=[recalled, repaired], tier=Copy.Tier.LOCAL)}
    Copy.objects.filter(pk=picked[recalled.pk].pk).update(written_at=timezone.now())
    Copy.objects.filter(instance=repaired, tier=Copy.Tier.REPLICA).update(
        state=Copy.State.PENDING)
    for copy in picked.values():
        assert copy.written_at is not None
        assert evict.evict_copy(copy.pk, copy.written_at) is False
    assert _on_disk(dicom_storage, recalled) and _on_disk(dicom_storage, repaired)


def test_the_shortfall_is_what_brings_free_space_up_to_the_watermark():
    assert evict.shortfall(total=1000, free=100, min_free_percent=15) == 50
    assert evict.shortfall(total=1000, free=200, min_free_percent=15) == 0
    assert evict.shortfall(total=1000, free=0, min_free_percent=0.1) == 1


def test_below_the_watermark_the_oldest_go_first_and_only_as_many_as_needed(
    stored, dicom_storage
):
    for days, instance in zip([40, 10, 30, 20], stored, strict=True):
        _age([instance], days)
    report = evict.Report()
    evict.evict_by_watermark(report, needed=stored[0].size_bytes + 1)
    assert report.by_watermark == 2
    assert [_on_disk(dicom_storage, i) for i in stored] == [False, True, False, True]


def test_the_watermark_is_measured_on_the_local_file_system(stored, dicom_storage, settings):
    settings.LOCAL_TIER_MIN_FREE_PERCENT = 0
    assert evict.watermark_shortfall() is None and evict.evict_local().count == 0
    settings.LOCAL_TIER_MIN_FREE_PERCENT = 100  # never reached: everything evictable goes
    assert (evict.watermark_shortfall() or 0) > 0
    report = evict.evict_local()
    assert report.by_watermark == 4
    assert not any(_on_disk(dicom_storage, i) for i in stored)
    assert spills(dicom_storage) == []


def test_on_a_storage_that_is_not_a_file_system_the_watermark_is_off(settings):
    settings.LOCAL_TIER_MIN_FREE_PERCENT = 100
    settings.STORAGES = {**settings.STORAGES, "dicom": {
        "BACKEND": "django.core.files.storage.InMemoryStorage"}}
    assert not isinstance(blobs.storage(), FileSystemStorage)
    assert evict.watermark_shortfall() is None


@contextlib.contextmanager
def another_run_going() -> Iterator[None]:
    """An eviction run in another thread (its own database session) holding the lock."""
    holding, done = threading.Event(), threading.Event()

    def run() -> None:
        try:
            with exclusive(evict.LOCK) as held:
                assert held
                holding.set()
                done.wait(30)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    assert holding.wait(30)
    try:
        yield
    finally:
        done.set()
        thread.join(30)


def test_one_run_at_a_time_a_second_one_skips_and_evicts_nothing(
    stored, dicom_storage, settings
):
    """Two runs measuring the same shortfall would each free it: the second one skips."""
    settings.LOCAL_TIER_MIN_FREE_PERCENT = 100
    with another_run_going():
        report = evict.evict_local()
        assert report.skipped and report.count == 0
        with pytest.raises(CommandError, match="another eviction run is going"):
            call_command("evict_local")
        assert evict.evict_local(dry_run=True).count == 4  # a dry run acts on nothing
        assert all(_on_disk(dicom_storage, i) for i in stored)
    report = evict.evict_local()  # the lock was released with the other run
    assert not report.skipped and report.by_watermark == 4


def test_the_command_dry_run_lists_and_deletes_nothing(stored, dicom_storage, capsys):
    Clinic.objects.filter(pk=story_clinic().pk).update(evict_local_after_days=1)
    _age(stored[:1], 2)
    call_command("evict_local", "--dry-run")
    out = capsys.readouterr().out
    assert stored[0].blob_key in out and "would evict 1 objects" in out
    assert _on_disk(dicom_storage, stored[0])
    assert _local_state(stored[0]) == Copy.State.WRITTEN
    call_command("evict_local")
    assert "evicted 1 objects" in capsys.readouterr().out
    assert not _on_disk(dicom_storage, stored[0])


def test_the_command_refuses_without_a_replica(settings):
    settings.REPLICA_URL = ""
    with pytest.raises(CommandError, match="REPLICA_URL"):
        call_command("evict_local")


def test_beat_runs_the_eviction_task(stored, dicom_storage, settings):
    assert settings.CELERY_BEAT_SCHEDULE["replica-evict-local"]["task"] == (
        "replica.tasks.evict_local")
    assert "replica.tasks.evict_local" in app.tasks
    Clinic.objects.filter(pk=story_clinic().pk).update(evict_local_after_days=0)
    assert tasks.evict_local.delay().get() == 4
    assert not any(_on_disk(dicom_storage, i) for i in stored)


def test_the_clinic_admin_shows_and_saves_the_setting(client, alice):
    clinic = story_clinic()
    client.force_login(alice)
    listing = client.get("/admin/accounts/clinic/")
    assert listing.status_code == 200
    assert "evict_local_after_days" in listing.content.decode()
    page = client.get(f"/admin/accounts/clinic/{clinic.pk}/change/")
    assert 'name="evict_local_after_days"' in page.content.decode()
    response = client.post(f"/admin/accounts/clinic/{clinic.pk}/change/", {
        "name": clinic.name, "cnes": "", "retention_years": 20, "minor_retention_age": 38,
        "evict_local_after_days": 90})
    assert response.status_code == 302, response.content
    clinic.refresh_from_db()
    assert clinic.evict_local_after_days == 90


def test_reconcile_does_not_call_an_evicted_object_missing(stored, dicom_storage):
    from replica import reconcile

    evict_all(stored[:1])
    (dicom_storage / stored[1].blob_key).unlink()  # lost, not evicted
    report = reconcile.reconcile([reconcile.Tier.LOCAL], reconcile.Options(min_age=0))
    assert [(p.kind, p.key) for p in report.problems] == [
        (reconcile.Kind.MISSING, stored[1].blob_key)]


def test_the_local_fixity_pass_leaves_evicted_instances_evicted(stored, dicom_storage):
    from imaging import fixity

    evict_all(stored[:2])
    due = fixity.due_instances(older_than=datetime.timedelta(0))
    assert set(due) == {i.pk for i in stored[2:]}
    fixity.verify_due(older_than=datetime.timedelta(0))
    for instance in stored[:2]:
        assert not _on_disk(dicom_storage, instance)
        assert _local_state(instance) == Copy.State.EVICTED
