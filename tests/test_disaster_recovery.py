"""The whole disaster: the local disk and the database are both lost, and the archive comes
back from the encrypted replica alone (a real S3 endpoint, moto's server mode): first the
database (``restore_database --from-replica``), then the local tier (``restore
--from-replica``). Every object is byte-identical, every row is back and the audit chain
verifies."""

from __future__ import annotations

import shutil
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from accounts.models import User
from audit.trail import first_broken_link
from imaging.models import Instance, Patient, Series, Study
from replica.models import Copy
from tests import replica_support
from tests.conftest import stored_files
from tests.replica_support import store_replicated
from tests.s3_support import s3_endpoint  # noqa: F401 - a fixture

replica = replica_support.replica

pytestmark = pytest.mark.django_db(transaction=True)


def _index() -> dict[str, Any]:
    """What the database says of the archive: every row that matters, by natural key."""
    return {
        "patients": sorted(Patient.objects.values_list("patient_id", "name", "clinic_id")),
        "studies": sorted(Study.objects.values_list("study_instance_uid", "num_instances",
                                                    "size_bytes")),
        "series": sorted(Series.objects.values_list("series_instance_uid", "num_instances")),
        "instances": sorted(Instance.objects.values_list("sop_instance_uid", "blob_key",
                                                         "sha256", "size_bytes")),
        "copies": sorted(Copy.objects.values_list("instance__sop_instance_uid", "tier",
                                                  "key", "state", "sha256")),
        "users": sorted(User.objects.values_list("username", "email")),
    }


def _lose_everything(dicom_storage: Any) -> None:
    shutil.rmtree(dicom_storage)
    Copy.objects.all().delete()
    Instance.objects.all().delete()
    Series.objects.all().delete()
    Study.objects.all().delete()
    Patient.objects.all().delete()
    User.objects.all().delete()
    assert stored_files(dicom_storage) == [] and not Instance.objects.exists()


def test_the_local_tier_and_the_database_lost_together_come_back_from_the_replica(
    replica, paula, dora, ct_study, other_study, dicom_storage,
    django_capture_on_commit_callbacks,
):
    paths = ct_study[1] + other_study[1]
    stored = store_replicated(paths, django_capture_on_commit_callbacks)
    originals = {i.blob_key: p.read_bytes() for i, p in zip(stored, paths, strict=True)}
    call_command("backup_database", "--to-replica", stdout=StringIO())
    before = _index()
    assert len(before["instances"]) == len(paths) == 16

    _lose_everything(dicom_storage)

    call_command("restore_database", "--from-replica", "--yes", stdout=StringIO())
    assert _index() == before  # every row, the replica copies' keys and states included
    out = StringIO()
    call_command("restore", "--from-replica", "--no-progress", stdout=out, stderr=StringIO())
    assert "16 instances: 16 recalled, 0 already local, 0 unrecoverable" in out.getvalue()

    for key, data in originals.items():
        assert (dicom_storage / key).read_bytes() == data
    assert {str(p.relative_to(dicom_storage)) for p in stored_files(dicom_storage)} == set(
        originals)
    assert first_broken_link() is None
    assert _index()["instances"] == before["instances"]
