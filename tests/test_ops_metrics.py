"""``/metrics``: Prometheus text for the monitoring network or a bearer token, 404 to
everyone else and when neither is configured; it counts real work: a STOW-RS upload, a
C-STORE from DCMTK's storescu, requests by view and status, audit writes."""

from __future__ import annotations

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from dimse.models import Peer
from dimse.testing import dcmtk
from replica.models import Copy
from tests.test_stow import CONTENT_TYPE, multipart, post, studies_url

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "scrape-token-for-tests-0123456789"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, frozenset(labels.items())), 0.0)


def scrape(client) -> str:
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return str(response.content.decode())


@pytest.fixture
def token(settings):
    settings.METRICS_TOKEN = TOKEN


def test_metrics_are_off_with_neither_token_nor_networks(client):
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 404


def test_a_wrong_or_missing_token_gets_404(client, token):
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope").status_code == 404


def test_the_monitoring_network_needs_no_token(client, settings):
    import ipaddress

    settings.METRICS_ALLOWED_NETS = [ipaddress.ip_network("127.0.0.0/8")]
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.9").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 404


def test_requests_are_counted_by_view_and_status(client, token):
    before = scrape(client)
    for _ in range(3):
        assert client.get("/accounts/login/").status_code == 200
    after = scrape(client)
    labels = {"view": "login", "method": "GET", "status": "200"}
    assert value(after, "portal_http_requests_total", **labels) - value(
        before, "portal_http_requests_total", **labels) == 3
    assert value(after, "portal_http_request_duration_seconds_count", view="login") - value(
        before, "portal_http_request_duration_seconds_count", view="login") == 3


def test_a_real_stow_counts_its_objects_and_audit_writes(live_server, tina, ct_study, token):
    _, paths = ct_study
    headers = {"Authorization": f"Bearer {TOKEN}"}
    before = requests.get(f"{live_server.url}/metrics", headers=headers, timeout=30).text
    response = post(studies_url(live_server), multipart([p.read_bytes() for p in paths]),
                    content_type=CONTENT_TYPE)
    assert response.status_code == 200, response.text
    again = post(studies_url(live_server), multipart([paths[0].read_bytes()]))
    assert again.status_code == 200
    after = requests.get(f"{live_server.url}/metrics", headers=headers, timeout=30).text
    stored = {"entry_point": "stow", "outcome": "stored"}
    duplicate = {"entry_point": "stow", "outcome": "duplicate"}
    assert value(after, "portal_ingest_objects_total", **stored) - value(
        before, "portal_ingest_objects_total", **stored) == len(paths)
    assert value(after, "portal_ingest_objects_total", **duplicate) - value(
        before, "portal_ingest_objects_total", **duplicate) == 1
    assert value(after, "portal_audit_write_duration_seconds_count") > value(
        before, "portal_audit_write_duration_seconds_count")


def test_a_real_cstore_counts_objects_associations_and_operations(portal, ct_study, client,
                                                                  token):
    Peer.objects.create(ae_title="MODALITY", host="127.0.0.1", may_store=True)
    _, paths = ct_study
    before = scrape(client)
    result = dcmtk("storescu", "-aet", "MODALITY", "-aec", portal.ae_title, *portal.address(),
                   *map(str, paths))
    assert result.returncode == 0, result.stderr
    refused = dcmtk("echoscu", "-aet", "STRANGER", "-aec", portal.ae_title, *portal.address())
    assert refused.returncode != 0
    portal.wait_idle()
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("portal_ingest_objects_total", entry_point="cstore",
                 outcome="stored") == len(paths)
    assert delta("portal_dimse_operations_total", operation="C-STORE",
                 status="success") == len(paths)
    assert delta("portal_dimse_associations_total", event="accepted") == 1
    assert delta("portal_dimse_associations_total", event="released") == 1
    assert delta("portal_dimse_associations_total", event="refused") == 1


def test_the_replication_backlog_is_read_from_the_copy_rows(client, token, paulas_record):
    from imaging.models import Instance

    instance = Instance.objects.first()
    assert instance is not None
    Copy.objects.create(instance=instance, tier=Copy.Tier.REPLICA, state=Copy.State.PENDING)
    text = scrape(client)
    assert value(text, "portal_replication_backlog", state="pending") == 1
    assert value(text, "portal_export_jobs", status="pending") == 0
    assert value(text, "portal_fixity_failed_objects") == 0


def test_fixity_results_are_counted(client, token, paulas_record, dicom_storage):
    from imaging.fixity import check_instance
    from imaging.models import Instance

    before = scrape(client)
    first, second = Instance.objects.order_by("pk")[:2]
    (dicom_storage / second.blob_key).write_bytes(b"damaged")
    assert check_instance(first.pk).ok
    assert not check_instance(second.pk).ok
    after = scrape(client)
    assert value(after, "portal_fixity_checks_total", result="ok") - value(
        before, "portal_fixity_checks_total", result="ok") == 1
    assert value(after, "portal_fixity_checks_total", result="failed") - value(
        before, "portal_fixity_checks_total", result="failed") == 1
    assert value(after, "portal_fixity_failed_objects") == 1
