"""Priors ready in time: when a new study of a patient arrives, a real Celery worker on
Redis recalls the evicted objects of her most relevant priors (ranked by imaging.priors,
as the doctors' timeline ranks them, RECALL_PRIORS_COUNT of them) to the local tier."""

from __future__ import annotations

import datetime
import hashlib
import re
import time
import uuid
from pathlib import Path

import pytest

from imaging.ingest import ingest
from imaging.models import Instance, Study
from imaging.synthetic import SeriesSpec, write_study
from portal.celery import app
from replica import priors
from replica.models import Copy
from tests import replica_support
from tests.celery_support import REDIS_URL, routed, running_worker
from tests.conftest import PAULA
from tests.replica_support import configure, evict_all, store_replicated
from tests.s3_support import s3_endpoint  # noqa: F401 - a fixture

replica = replica_support.replica


@pytest.fixture(scope="module")
def paulas_earlier_studies(tmp_path_factory) -> dict[str, tuple[str, list[Path]]]:
    """A chest CT a year before ct_study (the most relevant prior), a head CT two years
    before (same modality only) and a knee MR (not a prior of a chest CT at all)."""
    folder = tmp_path_factory.mktemp("priors")

    def study(name: str, modality: str, body_part: str, date: datetime.date):
        return write_study(folder / name, PAULA, [SeriesSpec(modality, 2, size=64,
                           body_part=body_part)], study_date=date,
                           accession=f"ACC-{name}", description=name)

    return {
        "chest": study("chest", "CT", "CHEST", datetime.date(2025, 3, 1)),
        "head": study("head", "CT", "HEAD", datetime.date(2024, 3, 1)),
        "knee": study("knee", "MR", "KNEE", datetime.date(2025, 9, 1)),
    }


def _instances(study_uid: str) -> list[Instance]:
    return list(Instance.objects.filter(series__study__study_instance_uid=study_uid))


@pytest.mark.django_db
def test_the_priors_recalled_are_the_timelines_most_relevant_ones(
    replica, settings, ct_study, paulas_earlier_studies, django_capture_on_commit_callbacks
):
    for _, paths in paulas_earlier_studies.values():
        store_replicated(paths, django_capture_on_commit_callbacks)
    store_replicated(ct_study[1][:1], django_capture_on_commit_callbacks)
    current = Study.objects.get(study_instance_uid=ct_study[0])
    uid = dict(Study.objects.values_list("pk", "study_instance_uid"))
    chest, head = (paulas_earlier_studies[n][0] for n in ("chest", "head"))
    assert [uid[pk] for pk in priors.relevant_priors(current.pk, 3)] == [chest, head]
    assert [uid[pk] for pk in priors.relevant_priors(current.pk, 1)] == [chest]
    settings.RECALL_PRIORS_COUNT = 0
    assert priors.relevant_priors(current.pk) == []


@pytest.mark.skipif(not REDIS_URL, reason="needs REDIS_URL pointing at a Redis server")
@pytest.mark.django_db(transaction=True)
def test_a_new_study_brings_its_top_priors_back_in_a_worker(
    replica, settings, ct_study, paulas_earlier_studies, dicom_storage, tmp_path,
    django_capture_on_commit_callbacks
):
    settings.RECALL_PRIORS_COUNT = 1
    earlier = {name: store_replicated(paths, django_capture_on_commit_callbacks)
               for name, (_, paths) in paulas_earlier_studies.items()}
    evict_all([i for stored in earlier.values() for i in stored])
    assert not any((dicom_storage / i.blob_key).exists()
                   for stored in earlier.values() for i in stored)

    queue = f"test-recall-{uuid.uuid4().hex[:12]}"
    env = {**configure(settings, settings.REPLICA_URL, settings.REPLICA_BUCKET),
           "RECALL_PRIORS_COUNT": "1"}
    # The tasks ingest dispatches go to this worker's queue (Celery's task_routes).
    with routed("replica.tasks.*", queue), \
            running_worker(queue, dicom_storage, tmp_path / "worker.log", env) as log:
        app.conf.task_always_eager = False
        try:
            for path in ct_study[1][:3]:  # the new study arrives, object by object
                with path.open("rb") as fp:
                    assert ingest(fp, source="test").accepted
            deadline = time.monotonic() + 60
            while not re.search(r"replica\.tasks\.recall_priors\[.*\] succeeded in .*: 2",
                                log.read_text()):
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        finally:
            app.conf.task_always_eager = True
    text = log.read_text()
    assert len(re.findall(r"replica\.tasks\.recall_priors\[.*\] received", text)) == 1, text
    originals = {hashlib.sha256(p.read_bytes()).hexdigest(): p.read_bytes()
                 for p in paulas_earlier_studies["chest"][1]}
    for instance in earlier["chest"]:
        assert (dicom_storage / instance.blob_key).read_bytes() == originals[instance.sha256]
        assert Copy.objects.get(instance=instance, tier=Copy.Tier.LOCAL).state == (
            Copy.State.WRITTEN)
    for name in ("head", "knee"):
        for instance in earlier[name]:
            assert not (dicom_storage / instance.blob_key).exists()
            assert Copy.objects.get(instance=instance, tier=Copy.Tier.LOCAL).state == (
                Copy.State.EVICTED)
