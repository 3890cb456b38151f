"""The Redis path for real: a ``celery -A portal worker`` process takes the fixity task from
the broker and updates the shared database and reads the shared blob store.

Needs ``REDIS_URL``; skipped without it. The worker gets the test database and the test's
DICOM storage folder through its environment, as a deployment would configure it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from imaging import tasks
from imaging.ingest import Outcome, ingest
from imaging.models import Instance
from portal.celery import app
from tests.celery_support import REDIS_URL, running_worker

pytestmark = [
    pytest.mark.skipif(not REDIS_URL, reason="needs REDIS_URL pointing at a Redis server"),
    pytest.mark.slow,
]


@pytest.fixture
def queue() -> str:
    """A queue of our own, so workers of other test runs on the same Redis never take it."""
    return f"test-fixity-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def worker(transactional_db, dicom_storage: Path, queue: str, tmp_path: Path) -> Iterator[Path]:
    """A real Celery worker process on the test database and blob store; yields its log."""
    with running_worker(queue, dicom_storage, tmp_path / "worker.log") as log:
        yield log


@pytest.fixture
def through_broker() -> Iterator[None]:
    """Undo conftest's in-process default for this test: tasks go through Redis."""
    app.conf.task_always_eager = False
    yield


def _store(path: Path) -> Instance:
    with path.open("rb") as fp:
        result = ingest(fp, source="test")
    assert result.outcome == Outcome.STORED and result.instance_id is not None
    return Instance.objects.get(pk=result.instance_id)


def test_a_worker_takes_the_fixity_task_from_redis_and_records_the_outcome(
    worker, through_broker, queue, ct_study, dicom_storage
):
    _, paths = ct_study
    intact, damaged = _store(paths[0]), _store(paths[1])
    blob = dicom_storage / damaged.blob_key
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(data)

    results = [
        tasks.verify_instance_fixity.apply_async((instance.pk,), queue=queue)
        for instance in (intact, damaged)
    ]
    try:
        outcomes = [r.get(timeout=120) for r in results]
    except Exception as exc:
        raise AssertionError(f"worker failed: {exc}\n{worker.read_text()}") from exc
    assert outcomes == [True, False]

    intact.refresh_from_db()
    damaged.refresh_from_db()
    assert intact.fixity_ok is True and intact.fixity_checked is not None
    assert damaged.fixity_ok is False and damaged.fixity_checked is not None
    assert blob.read_bytes() == bytes(data)  # reported, not repaired
    assert "fixity check FAILED" in worker.read_text()
