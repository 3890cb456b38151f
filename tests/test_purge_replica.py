"""A purge erases every copy of the patient's objects: the local files and the encrypted
replica objects too (a real S3 endpoint, moto's server mode). Other patients' replica
objects stay, and a replica that is down keeps the deletion listed for a retry."""

from __future__ import annotations

from typing import Any

import pytest

from imaging.models import Instance
from privacy import retention
from privacy.models import PendingBlobDeletion
from privacy.tasks import delete_pending_blobs
from replica.models import Copy
from tests.replica_support import replica  # noqa: F401 - a fixture
from tests.s3_support import s3_endpoint  # noqa: F401 - a fixture
from tests.test_retention import AFTER_BOTH, _listed

from .conftest import ingest_paths


def _replicated(paths: list[Any], capture: Any) -> set[str]:
    """Ingest the files with their replication run as after the commit: their keys."""
    with capture(execute=True):
        ingest_paths(paths)
    copies = Copy.objects.filter(tier=Copy.Tier.REPLICA,
                                 instance__sop_instance_uid__in=_uids(paths))
    assert {c.state for c in copies} == {Copy.State.VERIFIED}
    return set(copies.values_list("key", flat=True))


def _uids(paths: list[Any]) -> list[str]:
    import pydicom

    return [pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in paths]


def _keys(bucket: Any) -> set[str]:
    return {o.key for o in bucket.objects.all()}


@pytest.mark.django_db
def test_a_purge_deletes_the_patients_replica_objects_and_only_theirs(
    replica, paula, alice, ct_study, other_study, django_capture_on_commit_callbacks,  # noqa: F811
):
    paulas = _replicated(ct_study[1], django_capture_on_commit_callbacks)
    charlies = _replicated(other_study[1], django_capture_on_commit_callbacks)
    assert _keys(replica) == paulas | charlies and len(paulas) == 12
    patient = Instance.objects.get(sop_instance_uid=_uids(ct_study[1])[0]).series.study.patient

    request = _listed(patient)
    retention.approve(request.pk, alice, "retenção vencida")
    with django_capture_on_commit_callbacks(execute=True):
        retention.purge(request.pk, alice, "retenção vencida", today=AFTER_BOTH)

    assert _keys(replica) == charlies
    assert not PendingBlobDeletion.objects.exists()


@pytest.mark.django_db
def test_a_replica_that_is_down_keeps_the_deletion_listed_until_it_is_back(
    replica, paula, alice, ct_study, settings, django_capture_on_commit_callbacks,  # noqa: F811
):
    paulas = _replicated(ct_study[1], django_capture_on_commit_callbacks)
    patient = Instance.objects.get(sop_instance_uid=_uids(ct_study[1])[0]).series.study.patient
    request = _listed(patient)
    retention.approve(request.pk, alice, "retenção vencida")
    endpoint = settings.REPLICA_URL
    settings.REPLICA_URL = "http://127.0.0.1:9"  # nothing listens there
    with django_capture_on_commit_callbacks(execute=True):
        retention.purge(request.pk, alice, "retenção vencida", today=AFTER_BOTH)
    waiting = PendingBlobDeletion.objects.filter(storage=retention.REPLICA_STORAGE)
    assert set(waiting.values_list("key", flat=True)) == paulas
    assert all(row.attempts == 1 and row.last_error for row in waiting)
    assert _keys(replica) == paulas

    settings.REPLICA_URL = endpoint
    delete_pending_blobs()
    assert _keys(replica) == set() and not PendingBlobDeletion.objects.exists()
