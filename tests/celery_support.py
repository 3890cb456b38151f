"""A real Celery worker for tests: ``celery -A portal worker`` on Redis, on the test's
database and blob store, taking one queue of its own (other runs on the same Redis never
take its tasks). Needs ``REDIS_URL``."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from django.conf import settings

from tests.conftest import database_url

REDIS_URL = os.environ.get("REDIS_URL", "")
PROJECT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def running_worker(queue: str, dicom_storage: Path, log: Path,
                   extra_env: Mapping[str, str] | None = None) -> Iterator[Path]:
    """The worker process while the block runs; yields the path of its log."""
    dicom_storage.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DATABASE_URL": database_url(),
        "DATA_DIR": str(settings.DATA_DIR),
        "REDIS_URL": REDIS_URL,
        "CELERY_BROKER_URL": REDIS_URL,
        "DICOM_STORAGE_DIR": str(dicom_storage),
        "DATABASE_CONN_MAX_AGE": "0",
        **(extra_env or {}),
    }
    env.pop("S3_BUCKET", None)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "portal", "worker", "--pool=solo",
             "--without-heartbeat", "--without-gossip", "--without-mingle",
             "-Q", queue, "-n", f"{queue}@%h", "--loglevel=INFO"],
            cwd=PROJECT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        yield log
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def routed(pattern: str, queue: str) -> Iterator[None]:
    """Tasks whose names match ``pattern`` go to ``queue`` while inside, however they are
    sent (``delay()`` included). Celery caches its router once anything has been sent, and
    ``flush_routes`` alone does not reach that copy, so it is dropped too."""
    from portal.celery import app

    def reroute(routes: object) -> None:
        app.conf.task_routes = routes
        app.amqp.flush_routes()
        app.amqp.__dict__.pop("router", None)

    before = app.conf.task_routes
    reroute({pattern: {"queue": queue}})
    try:
        yield
    finally:
        reroute(before)


def run_on_worker(task: Any, queue: str, dicom_storage: Path, log: Path,
                  extra_env: Mapping[str, str] | None = None, timeout: float = 120) -> Any:
    """Send ``task`` (no arguments) to a real worker of its own and return its result; the
    worker's log is printed if it does not come."""
    from portal.celery import app

    with running_worker(queue, dicom_storage, log, extra_env):
        before, app.conf.task_always_eager = app.conf.task_always_eager, False
        try:
            return task.apply_async(queue=queue).get(timeout=timeout)
        except Exception:
            print(log.read_text())
            raise
        finally:
            app.conf.task_always_eager = before
