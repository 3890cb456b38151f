"""What operators read off the real processes: JSON log lines (one per request, per DICOM
association, per task, each with the request id) and metrics summed over processes.

Each test starts the process as production does (gunicorn, ``manage.py dicom_listener``,
a Celery worker on Redis), on the test database, with ``LOG_FORMAT=json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings

from dimse.models import Peer
from dimse.testing import LOOPBACK, dcmtk, free_port
from ops import request_id
from tests.celery_support import REDIS_URL, routed, running_worker
from tests.conftest import database_url

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

PROJECT = Path(settings.BASE_DIR)
TOKEN = "metrics-token-for-this-test-only"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings",
           "DATABASE_URL": database_url(), "DATA_DIR": str(tmp_path / "data"),
           "DICOM_SPOOL_DIR": str(settings.DICOM_SPOOL_DIR), "LOG_FORMAT": "json",
           "LOG_LEVEL": "INFO", "METRICS_TOKEN": TOKEN, "TASKS_IN_PROCESS": "1",
           "DATABASE_CONN_MAX_AGE": "0", **extra}
    for name in ("S3_BUCKET", "CELERY_BROKER_URL", "REDIS_URL", "PROMETHEUS_MULTIPROC_DIR"):
        if name not in extra:
            env.pop(name, None)
    return env


def _json_lines(log: Path) -> list[dict[str, Any]]:
    lines = []
    for raw in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            line = json.loads(raw)
            if isinstance(line, dict):
                lines.append(line)
    return lines


def _wait_for(predicate: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := predicate():
            return found
        time.sleep(0.1)
    raise AssertionError("not seen in time")


@contextlib.contextmanager
def _gunicorn(tmp_path: Path, name: str, env: dict[str, str]) -> Iterator[tuple[str, Path]]:
    """One gunicorn web node (one sync worker) on a free port: (its URL, its log)."""
    port = free_port()
    log = tmp_path / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("gunicorn")), "portal.wsgi", "--bind",
             f"{LOOPBACK}:{port}", "--workers", "1"],
            cwd=PROJECT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://{LOOPBACK}:{port}"
    try:
        def up() -> bool:
            try:
                return requests.get(f"{url}/health/live", timeout=10).status_code == 200
            except requests.RequestException:  # not listening yet, or Django still loading
                assert process.poll() is None, log.read_text()
                return False

        _wait_for(up)
        yield url, log
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_web_node_logs_one_json_line_per_request_with_its_id_and_no_query(tmp_path):
    with _gunicorn(tmp_path, "web", _env(tmp_path)) as (url, log):
        response = requests.get(f"{url}/accounts/login/?next=/&q=Paula+Souza", timeout=10,
                                headers={"X-Request-ID": "lb-7f3a.1"})
        assert response.status_code == 200
        assert response.headers["X-Request-ID"] == "lb-7f3a.1"
        forged = requests.get(f"{url}/accounts/login/", timeout=10,
                              headers={"X-Request-ID": 'x" injected="1 ' + "a" * 80})
        fresh = forged.headers["X-Request-ID"]
        assert request_id.sane(fresh) and "injected" not in fresh

        def request_lines() -> list[dict[str, Any]]:
            found = [line for line in _json_lines(log) if line.get("event") == "request"]
            return found if len(found) >= 2 else []

        lines = request_lines() or _wait_for(request_lines)
    first = next(line for line in lines if line.get("request_id") == "lb-7f3a.1")
    assert first["method"] == "GET" and first["status"] == 200
    assert first["path"] == "/accounts/login/" and first["view"] == "login"
    assert isinstance(first["duration_ms"], int | float)
    assert "Paula" not in log.read_text()  # the query string is never logged
    assert any(line.get("request_id") == fresh for line in lines)
    assert "injected" not in log.read_text()


def _count(metrics_text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in metrics_text.splitlines():
        if not line.startswith(name + "{"):
            continue
        head, value = line.rsplit(" ", 1)
        if all(f'{key}="{want}"' in head for key, want in labels.items()):
            total += float(value)
    return total


def test_with_a_multiprocess_folder_any_process_reports_what_every_process_counted(tmp_path):
    """Two web processes on one host sharing PROMETHEUS_MULTIPROC_DIR: the requests one of
    them answered are in the other one's scrape."""
    folder = tmp_path / "metrics"
    folder.mkdir()
    env = _env(tmp_path, PROMETHEUS_MULTIPROC_DIR=str(folder))
    with _gunicorn(tmp_path, "a", env) as (serving, _), \
            _gunicorn(tmp_path, "b", env) as (scraped, _):
        for _ in range(7):
            assert requests.get(f"{serving}/accounts/login/", timeout=10).status_code == 200
        text = requests.get(f"{scraped}/metrics", timeout=10,
                            headers={"Authorization": f"Bearer {TOKEN}"}).text
    assert _count(text, "portal_http_requests_total", view="login", status="200") == 7


def test_without_one_a_process_reports_only_what_it_counted(tmp_path):
    env = _env(tmp_path)
    with _gunicorn(tmp_path, "a", env) as (serving, _), \
            _gunicorn(tmp_path, "b", env) as (scraped, _):
        for _ in range(3):
            assert requests.get(f"{serving}/accounts/login/", timeout=10).status_code == 200
        text = requests.get(f"{scraped}/metrics", timeout=10,
                            headers={"Authorization": f"Bearer {TOKEN}"}).text
    assert _count(text, "portal_http_requests_total", view="login", status="200") == 0


def test_a_dicom_listener_logs_one_json_line_per_association(tmp_path, dicom_storage):
    Peer.objects.create(ae_title="MODALITY", host=LOOPBACK, may_store=True)
    port = free_port()
    log = tmp_path / "listener.log"
    env = _env(tmp_path, DICOM_STORAGE_DIR=str(dicom_storage))
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "dicom_listener", "--host", LOOPBACK, "--port",
             str(port), "--ae-title", "PORTAL"],
            cwd=PROJECT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        def echoed() -> bool:
            assert process.poll() is None, log.read_text()
            return dcmtk("echoscu", "-aet", "MODALITY", "-aec", "PORTAL", LOOPBACK,
                         str(port), timeout=10).returncode == 0

        _wait_for(echoed)
        refused = dcmtk("echoscu", "-aet", "STRANGER", "-aec", "PORTAL", LOOPBACK, str(port),
                        timeout=10)
        assert refused.returncode != 0

        def association_lines() -> list[dict[str, Any]]:
            found = [line for line in _json_lines(log) if line.get("event") == "association"]
            return found if {line.get("calling_ae") for line in found} >= {
                "MODALITY", "STRANGER"} else []

        lines = _wait_for(association_lines)
    finally:
        process.terminate()
        process.wait(timeout=30)
    by_caller = {line["calling_ae"]: line for line in lines}
    assert by_caller["STRANGER"]["outcome"] != by_caller["MODALITY"]["outcome"]
    assert all(line["level"] in ("INFO", "WARNING") for line in lines)


@pytest.mark.skipif(not REDIS_URL, reason="needs REDIS_URL pointing at a Redis server")
def test_a_task_carries_the_request_id_of_the_work_that_sent_it_to_the_worker(
    tmp_path, dicom_storage, settings
):
    from portal.celery import app
    from replica import tasks

    queue = f"ops-{os.getpid()}-{time.monotonic_ns()}"
    log = tmp_path / "worker.log"
    env = {"LOG_FORMAT": "json", "TASKS_IN_PROCESS": "0"}
    with running_worker(queue, dicom_storage, log, extra_env=env), routed("replica.*", queue):
        eager = app.conf.task_always_eager
        app.conf.task_always_eager = False
        token = request_id.bind("stow-4c1e")
        try:
            tasks.drain_backlog.delay()
        finally:
            request_id.unbind(token)
            app.conf.task_always_eager = eager

        def task_line() -> dict[str, Any] | None:
            return next((line for line in _json_lines(log) if line.get("event") == "task"
                         and line.get("task") == "replica.tasks.drain_backlog"), None)

        line = _wait_for(task_line)
    assert line["request_id"] == "stow-4c1e"
