"""``/health/live`` and ``/health/ready``: what a load balancer or orchestrator probes.

Both answer anyone (no credentials), over plain HTTP on the node's own address even with
production's host list and HTTPS redirect, with a short JSON body that names the checks and
nothing about patients; they are not audited reads. Ready is 503 as soon as one service the
node needs fails, and says which.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import requests

from audit.models import AuditEvent
from dimse.testing import free_port

pytestmark = pytest.mark.django_db


@pytest.fixture
def production_front(settings):
    """What a production node refuses or redirects: unknown hosts, plain HTTP."""
    settings.ALLOWED_HOSTS = ["portal.example.org"]
    settings.SECURE_SSL_REDIRECT = True
    settings.REQUIRE_2FA = True


def closed_port() -> int:
    return free_port()  # bound and released: nothing listens there


def test_live_answers_200_to_a_probe_by_address_over_plain_http(client, production_front):
    response = client.get("/health/live", HTTP_HOST="10.0.0.7:8000")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response["Cache-Control"] == "no-store"


def test_ready_lists_database_cache_and_storage_when_all_work(client, production_front,
                                                              settings):
    settings.TASKS_IN_PROCESS = True  # no broker to check (that is the test below)
    response = client.get("/health/ready", HTTP_HOST="10.0.0.7")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {
        "database": "ok", "cache": "ok", "storage": "ok"}}


def test_a_page_is_still_refused_for_that_host_and_redirected(client, production_front):
    """The exemption is the probes', not the site's."""
    assert client.get("/", HTTP_HOST="10.0.0.7").status_code == 400
    assert client.get("/", HTTP_HOST="portal.example.org").status_code == 301


def test_a_signed_in_user_without_second_factor_is_not_sent_to_2fa(client, dora,
                                                                   production_front):
    client.force_login(dora)
    assert client.get("/health/ready", HTTP_HOST="portal.example.org").status_code == 200


def test_the_trailing_slash_and_head_work_too_and_post_is_refused(client):
    assert client.get("/health/live/").status_code == 200
    assert client.head("/health/ready").status_code == 200
    response = client.post("/health/live")
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"


def test_probes_are_not_on_the_audit_trail(client, paulas_record):
    before = AuditEvent.objects.count()
    client.get("/health/live")
    client.get("/health/ready")
    assert AuditEvent.objects.count() == before


def test_ready_is_503_and_names_the_storage_when_it_cannot_be_written(client, settings,
                                                                      tmp_path: Path):
    settings.TASKS_IN_PROCESS = True
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the storage folder should be")
    settings.STORAGES = {**settings.STORAGES, "dicom": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(blocker / "dicom")}}}
    response = client.get("/health/ready")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "checks": {
        "database": "ok", "cache": "ok", "storage": "unavailable"}}


def test_ready_leaves_no_probe_object_in_the_storage(client, dicom_storage: Path):
    assert client.get("/health/ready").status_code == 200
    assert [p for p in dicom_storage.rglob("*") if p.is_file()] == []


def test_ready_is_503_when_the_cache_is_unreachable(client, settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": f"redis://127.0.0.1:{closed_port()}/0"}}
    response = client.get("/health/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["cache"] == "unavailable"


def test_ready_checks_the_broker_when_workers_are_configured(client, settings):
    settings.TASKS_IN_PROCESS = False
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{closed_port()}/0"
    response = client.get("/health/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["broker"] == "unavailable"


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs REDIS_URL (real Redis)")
def test_ready_passes_with_the_real_redis_as_cache_and_broker(client, settings):
    url = os.environ["REDIS_URL"]
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": url}}
    settings.TASKS_IN_PROCESS = False
    settings.CELERY_BROKER_URL = url
    response = client.get("/health/ready")
    assert response.status_code == 200, response.content
    assert response.json()["checks"] == {"database": "ok", "cache": "ok", "storage": "ok",
                                         "broker": "ok"}


def test_ready_checks_the_replica_store_when_one_is_configured(client, settings):
    settings.REPLICA_URL = f"http://127.0.0.1:{closed_port()}"
    settings.REPLICA_BUCKET = "replica"
    response = client.get("/health/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["replica"] == "unavailable"


def test_the_answer_carries_no_host_name_or_patient_data(client, settings, paulas_record):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": f"redis://127.0.0.1:{closed_port()}/0"}}
    body = client.get("/health/ready").content.decode()
    assert "127.0.0.1" not in body
    assert paulas_record.patient_id not in body and "Paula" not in body
    assert set(json.loads(body)) == {"status", "checks"}


@pytest.mark.django_db(transaction=True)
def test_a_real_http_server_answers_the_probes(live_server):
    host, port = live_server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))):
        pass
    assert requests.get(f"{live_server.url}/health/live", timeout=10).status_code == 200
    ready = requests.get(f"{live_server.url}/health/ready", timeout=30)
    assert ready.status_code == 200 and ready.json()["status"] == "ok"
