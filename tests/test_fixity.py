"""Fixity: stored files are re-hashed against the checksum taken at ingest.

A changed or missing file is reported as failed and logged, never repaired; a storage that
cannot be read right now leaves the instance's state alone so the check can be retried.
"""

from __future__ import annotations

import datetime
import logging
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from imaging import fixity, tasks
from imaging.ingest import Outcome, ingest
from imaging.models import Instance

pytestmark = pytest.mark.django_db


def _store(path: Path) -> Instance:
    with path.open("rb") as fp:
        result = ingest(fp, source="test")
    assert result.outcome == Outcome.STORED
    assert result.instance_id is not None
    return Instance.objects.get(pk=result.instance_id)


def _blob(storage: Path, instance: Instance) -> Path:
    return storage / instance.blob_key


@pytest.fixture
def stored(ct_study) -> list[Instance]:
    _, paths = ct_study
    return [_store(p) for p in paths[:3]]


def test_an_intact_blob_passes_and_the_check_is_recorded(stored):
    instance = stored[0]
    assert instance.fixity_checked is None
    assert fixity.verify_instance(instance.pk) is True
    instance.refresh_from_db()
    assert instance.fixity_ok is True
    assert instance.fixity_checked is not None


def test_a_blob_with_one_byte_changed_on_disk_fails_is_logged_and_is_not_repaired(
    stored, dicom_storage, caplog
):
    instance = stored[1]
    path = _blob(dicom_storage, instance)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(data)

    with caplog.at_level(logging.ERROR, logger="imaging.fixity"):
        assert fixity.verify_instance(instance.pk) is False
    instance.refresh_from_db()
    assert instance.fixity_ok is False
    assert instance.fixity_checked is not None
    assert instance.sop_instance_uid in caplog.text
    assert "content changed" in caplog.text
    assert path.read_bytes() == bytes(data)  # left as found, for investigation


def test_a_missing_blob_fails(stored, dicom_storage):
    instance = stored[2]
    _blob(dicom_storage, instance).unlink()
    assert fixity.verify_instance(instance.pk) is False
    instance.refresh_from_db()
    assert instance.fixity_ok is False
    assert fixity.check_instance(instance.pk).reason == "the stored file is missing"


def test_the_command_reports_each_failure_and_exits_non_zero(stored, dicom_storage, capsys):
    damaged, missing = stored[0], stored[1]
    path = _blob(dicom_storage, damaged)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(data)
    _blob(dicom_storage, missing).unlink()

    with pytest.raises(CommandError, match="2 stored files failed"):
        call_command("verify_fixity")
    out, err = capsys.readouterr()
    assert "3 files checked: 1 ok, 2 failed" in out
    assert damaged.sop_instance_uid in err and "content changed" in err
    assert missing.sop_instance_uid in err and "missing" in err


def test_the_command_succeeds_quietly_when_every_file_is_intact(stored, capsys):
    call_command("verify_fixity")
    assert "3 files checked: 3 ok, 0 failed" in capsys.readouterr().out
    assert set(Instance.objects.values_list("fixity_ok", flat=True)) == {True}


def test_a_storage_error_other_than_absence_is_not_a_failure_but_a_retry(
    stored, dicom_storage
):
    instance = stored[0]
    path = _blob(dicom_storage, instance)
    path.unlink()
    path.mkdir()  # unreadable as a file: IsADirectoryError, an OSError like a network error
    with pytest.raises(fixity.StorageUnavailable):
        fixity.verify_instance(instance.pk)
    instance.refresh_from_db()
    assert instance.fixity_ok is None and instance.fixity_checked is None
    report = fixity.verify_due(older_than=datetime.timedelta(0))
    assert [pk for pk, _ in report.unreadable] == [instance.pk]
    assert report.checked == 2 and not report.failures


def test_the_beat_task_checks_what_is_due_and_leaves_recent_checks_alone(stored):
    recent, old, never = stored
    long_ago = timezone.now() - fixity.max_age() - datetime.timedelta(days=1)
    just_now = timezone.now() - datetime.timedelta(minutes=5)
    Instance.objects.filter(pk=recent.pk).update(fixity_checked=just_now, fixity_ok=True)
    Instance.objects.filter(pk=old.pk).update(fixity_checked=long_ago, fixity_ok=True)

    assert fixity.due_instances() == [never.pk, old.pk]  # never checked first
    assert tasks.verify_fixity.delay().get() == 2
    for instance in (recent, old, never):
        instance.refresh_from_db()
    assert recent.fixity_checked == just_now
    assert old.fixity_checked > just_now and old.fixity_ok is True
    assert never.fixity_ok is True
    assert fixity.due_instances() == []


def test_the_instance_task_is_idempotent_and_skips_work_done_since_dispatch(stored):
    instance = stored[0]
    due_before = timezone.now().isoformat()
    assert tasks.verify_instance_fixity.delay(instance.pk, due_before).get() is True
    instance.refresh_from_db()
    first = instance.fixity_checked
    # Redelivered or dispatched twice: already checked since dispatch, nothing to do.
    assert tasks.verify_instance_fixity.delay(instance.pk, due_before).get() is None
    instance.refresh_from_db()
    assert instance.fixity_checked == first
    # Without a cutoff it simply checks again; an instance that is gone is no error.
    assert tasks.verify_instance_fixity.delay(instance.pk).get() is True
    assert tasks.verify_instance_fixity.delay(10**9).get() is None
