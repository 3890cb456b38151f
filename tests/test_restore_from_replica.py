"""``manage.py restore --from-replica`` rebuilds a lost local tier from the replica: every
missing or evicted object comes back byte for byte (by the same recall a read makes), a
second run changes nothing, and objects without a verified replica copy are listed as
unrecoverable with exit status 1."""

from __future__ import annotations

import shutil
import threading
import time
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from imaging.models import Instance
from replica import recall
from replica.models import Copy
from tests import replica_support
from tests.conftest import stored_files
from tests.replica_support import evict_all, spills, store_replicated
from tests.s3_support import s3_endpoint  # noqa: F401 - a fixture

replica = replica_support.replica

pytestmark = pytest.mark.django_db


def _restore(*args: str, err: StringIO | None = None) -> str:
    out = StringIO()
    call_command("restore", "--from-replica", "--no-progress", *args, stdout=out,
                 stderr=err or StringIO())
    return out.getvalue()


def test_a_lost_local_tier_comes_back_byte_for_byte_and_a_second_run_does_nothing(
    replica, ct_study, dicom_storage, django_capture_on_commit_callbacks
):
    paths = ct_study[1][:6]
    stored = store_replicated(paths, django_capture_on_commit_callbacks)
    evict_all(stored[:2])  # two evicted ...
    shutil.rmtree(dicom_storage)  # ... and then the whole disk lost
    assert stored_files(dicom_storage) == []

    assert "6 instances: 6 recalled, 0 already local, 0 unrecoverable" in _restore()

    for instance, path in zip(stored, paths, strict=True):
        assert (dicom_storage / instance.blob_key).read_bytes() == path.read_bytes()
    assert not Copy.objects.filter(tier=Copy.Tier.LOCAL, state=Copy.State.EVICTED).exists()
    assert spills(dicom_storage) == []
    assert "6 instances: 0 recalled, 6 already local, 0 unrecoverable" in _restore()


def test_a_study_or_a_clinic_can_be_restored_alone(
    replica, ct_study, other_study, dicom_storage, django_capture_on_commit_callbacks
):
    paulas = store_replicated(ct_study[1][:2], django_capture_on_commit_callbacks)
    charlies = store_replicated(other_study[1][:2], django_capture_on_commit_callbacks)
    evict_all(paulas + charlies)
    assert "2 recalled" in _restore("--study", ct_study[0])
    assert all((dicom_storage / i.blob_key).exists() for i in paulas)
    assert not any((dicom_storage / i.blob_key).exists() for i in charlies)
    clinic = Instance.objects.filter(pk=charlies[0].pk).values_list(
        "series__study__patient__clinic_id", flat=True).get()
    assert clinic is not None
    assert "2 recalled, 2 already local" in _restore("--clinic", str(clinic))


def test_objects_without_a_verified_replica_copy_are_listed_and_the_exit_status_is_1(
    replica, ct_study, dicom_storage, django_capture_on_commit_callbacks
):
    stored = store_replicated(ct_study[1][:3], django_capture_on_commit_callbacks)
    Copy.objects.filter(instance=stored[1], tier=Copy.Tier.REPLICA).update(
        state=Copy.State.FAILED)
    shutil.rmtree(dicom_storage)

    err = StringIO()
    with pytest.raises(CommandError) as refused:
        _restore(err=err)
    assert refused.value.returncode == 1
    assert f"unrecoverable: instance {stored[1].pk} ({stored[1].blob_key})" in err.getvalue()
    assert (dicom_storage / stored[0].blob_key).exists()
    assert (dicom_storage / stored[2].blob_key).exists()
    assert not (dicom_storage / stored[1].blob_key).exists()


@pytest.mark.django_db(transaction=True)
def test_a_lost_tier_is_recalled_several_objects_at_once(
    replica, ct_study, dicom_storage, django_capture_on_commit_callbacks, monkeypatch, settings
):
    settings.RECALL_CONCURRENCY = 3
    paths = ct_study[1][:8]
    stored = store_replicated(paths, django_capture_on_commit_callbacks)
    shutil.rmtree(dicom_storage)
    in_flight: set[str] = set()
    widest = 0
    lock = threading.Lock()
    one = recall.recall_instance

    def watched(instance: Instance, ring: Any = None) -> recall.Outcome:
        nonlocal widest
        with lock:
            in_flight.add(threading.current_thread().name)
            widest = max(widest, len(in_flight))
        try:
            time.sleep(0.05)
            return one(instance, ring)
        finally:
            with lock:
                in_flight.discard(threading.current_thread().name)

    monkeypatch.setattr(recall, "recall_instance", watched)

    assert "8 instances: 8 recalled, 0 already local, 0 unrecoverable" in _restore()

    assert widest == 3
    for instance, path in zip(stored, paths, strict=True):
        assert (dicom_storage / instance.blob_key).read_bytes() == path.read_bytes()
    assert spills(dicom_storage) == []
