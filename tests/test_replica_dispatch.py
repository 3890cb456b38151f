"""The replica's tasks are queued off the storer's clock: ingest returns once its
transaction has committed, and a thread of the process sends the tasks to the broker in
order, the copies of ingests close together in one task. A send that fails is left to the
backlog drain; the copy rows are already there."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis

from imaging.ingest import ingest
from imaging.models import Instance
from portal.celery import app
from replica.dispatcher import Dispatcher, dispatcher
from replica.models import Copy
from tests import replica_support
from tests.celery_support import REDIS_URL, routed, running_worker
from tests.s3_support import s3_endpoint  # noqa: F401 - a fixture

replica = replica_support.replica


@pytest.fixture
def queued_for_a_broker():
    """Sends go to the broker (not run in-process) while the test runs."""
    app.conf.task_always_eager = False
    try:
        yield
    finally:
        app.conf.task_always_eager = True


def test_a_send_runs_on_the_dispatch_thread_and_the_caller_does_not_wait_for_it(
        queued_for_a_broker):
    sends = Dispatcher()
    release = threading.Event()
    ran: list[tuple[str, str]] = []

    def slow_broker(name: str) -> None:
        release.wait(10)
        ran.append((name, threading.current_thread().name))

    started = time.monotonic()
    sends.submit(slow_broker, "first")
    sends.submit(slow_broker, "second")
    assert time.monotonic() - started < 0.5 and ran == []
    assert not sends.wait(0.2)  # still held by the broker
    release.set()
    assert sends.wait(10)
    assert ran == [("first", "replica-dispatch"), ("second", "replica-dispatch")]


def test_a_failed_send_is_logged_and_the_next_ones_are_still_made(queued_for_a_broker, caplog):
    sends = Dispatcher()
    made: list[int] = []

    def broker_down(_: int) -> None:
        raise ConnectionError("broker down")

    with caplog.at_level(logging.ERROR, logger="replica.dispatcher"):
        sends.submit(broker_down, 1)
        sends.submit(made.append, 2)
        assert sends.wait(10)
    assert made == [2]
    assert "backlog drain will retry" in caplog.text and "broker down" in caplog.text


def recording() -> tuple[list[tuple[str, list[int]]], Callable[[list[int]], None],
                         Callable[[list[int]], None]]:
    """What was sent, and two sends (of copies, of studies) that record themselves."""
    made: list[tuple[str, list[int]]] = []

    def copies(ids: list[int]) -> None:
        made.append(("copies", ids))

    def studies(ids: list[int]) -> None:
        made.append(("studies", ids))

    return made, copies, studies


def test_ids_sent_close_together_go_in_one_send_of_at_most_the_batch(
        queued_for_a_broker, settings):
    settings.REPLICA_DISPATCH_LINGER_SECONDS = 5  # far longer than the submits take
    settings.REPLICA_DISPATCH_BATCH = 4
    sends = Dispatcher()
    made, copies, studies = recording()
    for first in (1, 3, 5):
        sends.submit_many(copies, [first, first + 1])
        sends.submit_many(studies, [first])
    sends.submit(made.append, ("plain", []))  # not merged: it ends the gathering, in order
    sends.submit_many(copies, [7])
    assert sends.wait(10)
    # A full batch ends a gathering; the next one starts with what came after it.
    assert made == [("copies", [1, 2, 3, 4]), ("studies", [1]),
                    ("studies", [3, 5]), ("copies", [5, 6]),
                    ("plain", []), ("copies", [7])]


def test_sends_handed_over_together_are_merged_with_the_sends_around_them_in_order(
        queued_for_a_broker, settings):
    settings.REPLICA_DISPATCH_LINGER_SECONDS = 5
    settings.REPLICA_DISPATCH_BATCH = 4
    sends = Dispatcher()
    made, copies, studies = recording()
    # What one ingest hands over: its copies and its studies, in one put.
    sends.submit_gathered({copies: [1, 2], studies: [9]})
    sends.submit_gathered({copies: [], studies: [9]})  # an empty list sends nothing
    sends.submit_many(copies, [3])
    sends.submit(made.append, ("plain", []))
    assert sends.wait(10)
    assert made == [("copies", [1, 2, 3]), ("studies", [9, 9]), ("plain", [])]


def test_callers_join_the_open_gathering_and_wake_the_thread_only_to_open_one(
        queued_for_a_broker, settings):
    """One object stored after another must not wake the dispatch thread each time (it
    would take the interpreter lock from the listener's threads): ids join the gathering
    already queued, and the thread is handed one per batch."""
    settings.REPLICA_DISPATCH_LINGER_SECONDS = 5
    settings.REPLICA_DISPATCH_BATCH = 16
    sends = Dispatcher()
    made, copies, studies = recording()
    sends.submit(made.append, ("plain", []))  # the thread started
    assert sends.wait(10)
    handed: list[object] = []
    put = sends._sends.put

    def counted(item: Any, *args: Any, **kwargs: Any) -> None:
        handed.append(item)
        put(item, *args, **kwargs)

    sends._sends.put = counted  # type: ignore[method-assign]
    for pk in range(40):  # forty ingests, one object each
        sends.submit_gathered({copies: [pk], studies: [7]})
    assert sends.wait(10)
    assert len(handed) == 3 + 1  # 16 + 16 + 8 ids, and the wait's own marker
    assert [ids for name, ids in made if name == "copies"] == [
        list(range(16)), list(range(16, 32)), list(range(32, 40))]
    assert [len(ids) for name, ids in made if name == "studies"] == [16, 16, 8]


def test_with_tasks_in_process_a_failing_send_does_not_stop_the_next_one_handed_over_with_it(
        caplog):
    made: list[list[int]] = []

    def broker_down(ids: list[int]) -> None:
        raise ConnectionError("broker down")

    with caplog.at_level(logging.ERROR, logger="replica.dispatcher"):
        Dispatcher().submit_gathered({broker_down: [1], made.append: [2]})
    assert made == [[2]]
    assert "broker_down failed" in caplog.text


def test_with_tasks_in_process_a_send_runs_at_once_in_the_caller():
    assert app.conf.task_always_eager
    ran: list[str] = []
    Dispatcher().submit(lambda: ran.append(threading.current_thread().name))
    assert ran == [threading.current_thread().name]


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(not REDIS_URL, reason="needs REDIS_URL pointing at a Redis server")
def test_ingest_leaves_one_replication_task_for_its_copies_and_one_priors_task_on_the_broker(
        replica, settings, ct_study, queued_for_a_broker):
    settings.RECALL_PRIORS_COUNT = 2
    settings.REPLICA_DISPATCH_LINGER_SECONDS = 5  # the three ingests' copies in one task
    queue = f"test-dispatch-{uuid.uuid4().hex[:12]}"
    broker = redis.Redis.from_url(REDIS_URL)
    try:
        with routed("replica.tasks.*", queue):
            for path in ct_study[1][:3]:
                with path.open("rb") as fp:
                    assert ingest(fp, source="test").accepted
            assert dispatcher.wait(30)
        pending = Copy.objects.filter(tier=Copy.Tier.REPLICA, state=Copy.State.PENDING)
        assert pending.count() == 3  # no worker: the rows wait, as the drain would find them
        sent = sorted((json.loads(m)["headers"]["task"], json.loads(m)["headers"]["argsrepr"])
                      for m in broker.lrange(queue, 0, -1))
        study = Instance.objects.values_list("series__study_id", flat=True).first()
        assert sent == [("replica.tasks.recall_priors", f"({study},)"),
                        ("replica.tasks.replicate_copies",
                         f"({sorted(pending.values_list('pk', flat=True))},)")]
    finally:
        broker.delete(queue)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(not REDIS_URL, reason="needs REDIS_URL pointing at a Redis server")
def test_a_worker_replicates_the_gathered_copies_and_retries_a_failed_one_on_its_own(
        replica, settings, ct_study, dicom_storage, tmp_path, queued_for_a_broker):
    settings.RECALL_PRIORS_COUNT = 0
    settings.REPLICA_DISPATCH_LINGER_SECONDS = 5
    queue = f"test-gathered-{uuid.uuid4().hex[:12]}"
    env = {**replica_support.configure(settings, settings.REPLICA_URL, replica.name),
           "REPLICA_RETRY_SECONDS": "1"}
    paths = ct_study[1][:3]
    # The last object's local file is damaged before the worker reads it: its attempt
    # fails (and is retried on its own), the other two are verified by the gathered task.
    with routed("replica.tasks.*", queue):
        ids = []
        for path in paths:
            with path.open("rb") as fp:
                result = ingest(fp, source="test")
            assert result.accepted and result.instance_id is not None
            ids.append(result.instance_id)
        damaged = Instance.objects.get(pk=ids[-1])
        local = dicom_storage / damaged.blob_key
        original = local.read_bytes()
        local.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        assert dispatcher.wait(30)
        copies = Copy.objects.filter(tier=Copy.Tier.REPLICA)
        with running_worker(queue, dicom_storage, tmp_path / "worker.log", env) as log:
            deadline = time.monotonic() + 90
            while copies.filter(state=Copy.State.VERIFIED).count() < 2 or \
                    not copies.filter(instance_id=ids[-1], attempts__gte=2).exists():
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.3)
            local.write_bytes(original)  # repaired: its own retry now succeeds
            while copies.exclude(state=Copy.State.VERIFIED).exists():
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.3)
            text = log.read_text()
    assert len(re.findall(r"replica\.tasks\.replicate_copies\[.*\] received", text)) == 1, text
    assert re.search(r"replica\.tasks\.replicate_copy\[.*\] received", text), text
    for copy in copies.select_related("instance"):
        assert copy.sha256 == copy.instance.sha256
