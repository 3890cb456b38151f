"""Read audits cost less than the read: a caller's reads of one study are one viewing
session, a chained entry when it opens and one with its final count when it closes; the
reads in between are counted on a separate row without the chain lock."""

from __future__ import annotations

import csv
import datetime
import io
import threading

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from audit import read_sessions
from audit.models import AuditAction, AuditEvent, Outcome, ReadSession
from audit.trail import Actor, Target, first_broken_link
from imaging.models import Instance, Study
from sharing import services

from .http_bodies import body

OHIF_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def _frame_urls(study: Study) -> list[str]:
    return [
        f"/dicomweb/studies/{study.study_instance_uid}/series/{i.series.series_instance_uid}"
        f"/instances/{i.sop_instance_uid}/frames/1"
        for i in Instance.objects.filter(series__study=study).select_related("series")
    ]


def _read_frames(client, study: Study) -> int:
    urls = _frame_urls(study)
    for url in urls:
        response = client.get(url, HTTP_ACCEPT=OHIF_ACCEPT)
        assert response.status_code == 200
        body(response)
    return len(urls)


def _idle(seconds: int = 3600) -> None:
    """Let every open session go idle (as if its last read was an hour ago)."""
    ReadSession.objects.update(last_read=ReadSession.objects.get().last_read
                               - datetime.timedelta(seconds=seconds))


def test_a_viewer_loading_every_frame_of_a_study_writes_one_chained_entry(
        client, dora, paula, paulas_study):
    client.force_login(paula)
    n = _read_frames(client, paulas_study)
    assert n == 12
    (opened,) = AuditEvent.objects.filter(action=AuditAction.RETRIEVE)
    assert (opened.username, opened.outcome, opened.level) == ("paula", "allowed", "instance")
    assert opened.study_uid == paulas_study.study_instance_uid
    assert opened.detail["read_session"] == "opened"
    session = ReadSession.objects.get()
    assert (session.reads, session.opened_seq, session.closed_seq) == (n, opened.seq, None)
    assert first_broken_link() is None


def test_a_read_in_an_open_session_is_one_update_without_the_chain_lock(
        client, paula, paulas_study):
    client.force_login(paula)
    first, second = _frame_urls(paulas_study)[:2]
    client.get(first, HTTP_ACCEPT=OHIF_ACCEPT)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(second, HTTP_ACCEPT=OHIF_ACCEPT)
        assert response.status_code == 200
    audit_sql = [q["sql"] for q in queries if "audit_" in q["sql"]]
    assert len(audit_sql) == 1 and audit_sql[0].startswith("UPDATE \"audit_readsession\"")
    assert ReadSession.objects.get().reads == 2


def test_the_next_read_after_the_idle_window_closes_the_session_with_its_final_count(
        client, paula, paulas_study):
    client.force_login(paula)
    urls = _frame_urls(paulas_study)
    for url in urls[:5]:
        client.get(url, HTTP_ACCEPT=OHIF_ACCEPT)
    _idle()
    client.get(urls[5], HTTP_ACCEPT=OHIF_ACCEPT)
    opened, closed, reopened = AuditEvent.objects.order_by("seq")
    assert closed.detail["read_session"]["reads"] == 5
    assert closed.detail["read_session"]["opened_seq"] == opened.seq
    assert (closed.level, closed.username) == ("study", "paula")
    assert reopened.detail["read_session"] == "opened"
    old, new = ReadSession.objects.order_by("opened")
    assert (old.reads, old.closed_seq) == (5, closed.seq)
    assert (new.reads, new.closed_seq) == (1, None)
    assert first_broken_link() is None


def test_close_read_sessions_writes_the_final_count_of_idle_sessions_only(
        client, paula, paulas_study, capsys):
    client.force_login(paula)
    _read_frames(client, paulas_study)
    call_command("close_read_sessions")
    assert "closed 0" in capsys.readouterr().out
    _idle()
    call_command("close_read_sessions")
    assert "closed 1" in capsys.readouterr().out
    closed = AuditEvent.objects.order_by("seq").last()
    assert closed is not None and closed.detail["read_session"]["reads"] == 12
    assert ReadSession.objects.get().closed_seq == closed.seq
    assert first_broken_link() is None


def test_refused_reads_are_each_their_own_chained_entry(client, charlie, paulas_study):
    client.force_login(charlie)
    for url in _frame_urls(paulas_study)[:3]:
        assert client.get(url, HTTP_ACCEPT=OHIF_ACCEPT).status_code == 404
    assert AuditEvent.objects.filter(outcome=Outcome.DENIED, username="charlie").count() == 3
    assert not ReadSession.objects.exists()


def test_rendered_frames_and_single_instances_are_counted_on_sessions(
        client, paula, paulas_study):
    client.force_login(paula)
    instances = Instance.objects.filter(series__study=paulas_study).select_related("series")
    for i in instances[:3]:
        base = (f"/dicomweb/studies/{paulas_study.study_instance_uid}/series/"
                f"{i.series.series_instance_uid}/instances/{i.sop_instance_uid}")
        assert client.get(base + "/frames/1/rendered", HTTP_ACCEPT="image/jpeg"
                          ).status_code == 200
        response = client.get(base, HTTP_ACCEPT="multipart/related; type=\"application/dicom\"")
        assert response.status_code == 200
        b"".join(response.streaming_content)
    sessions = dict(ReadSession.objects.values_list("action", "reads"))
    assert sessions == {"view": 3, "retrieve": 3}
    assert AuditEvent.objects.filter(detail__read_session="opened").count() == 2


def test_with_a_window_of_zero_every_read_is_its_own_chained_entry(
        client, paula, paulas_study, settings):
    settings.AUDIT_READ_SESSION_SECONDS = 0
    client.force_login(paula)
    n = _read_frames(client, paulas_study)
    assert AuditEvent.objects.filter(action=AuditAction.RETRIEVE).count() == n
    assert not ReadSession.objects.exists()


def test_patient_portal_frames_are_counted_on_the_patients_session(
        client, paula, paulas_study):
    client.force_login(paula)
    instances = list(Instance.objects.filter(series__study=paulas_study)[:4])
    for instance in instances:
        url = reverse("patients:frame_image", args=[paulas_study.study_instance_uid,
                                                     instance.sop_instance_uid, 0])
        assert client.get(url).status_code == 200
    session = ReadSession.objects.get()
    assert (session.action, session.reads, session.username) == ("view", 4, "paula")


def test_share_image_fetches_are_on_the_trail_as_the_shares_session(
        client, paula, paulas_study):
    from accounts.models import Consent, Purpose
    from privacy import consent as consents

    consents.give(paulas_study.patient, Purpose.SHARING, consents.CURRENT_TEXT_VERSION,
                  Consent.Channel.PORTAL, paula)
    share, token = services.share_with_professional(
        paula, paulas_study, "dr.who@outside.example", actor=Actor.for_user(paula),
        link_url=lambda t: f"http://testserver/v/{t}")
    for instance in Instance.objects.filter(series__study=paulas_study)[:3]:
        url = reverse("sharing:share_image", args=[token, instance.sop_instance_uid])
        assert client.get(url).status_code == 200
    session = ReadSession.objects.get()
    assert (session.caller, session.reads) == (f"share:{share.pk}", 3)
    opened = AuditEvent.objects.get(seq=session.opened_seq)
    assert opened.username == "share:dr.who@outside.example"
    assert opened.detail["share"] == share.pk


def test_the_patient_sees_the_sessions_count_and_last_read_on_her_access_page(
        client, dora, paula, paulas_study):
    target = Target.study(paulas_study)
    for _ in range(7):
        read_sessions.record_read(AuditAction.VIEW, Actor.for_user(dora), target)
    client.force_login(paula)
    page = client.get("/audit/my-access/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "7 images read in this session" in page


def test_the_exports_access_report_has_the_sessions_count_and_last_read(
        dora, paula, paulas_study, django_capture_on_commit_callbacks):
    from django.core.files.storage import storages

    from privacy import export as exports

    for _ in range(5):
        read_sessions.record_read(AuditAction.VIEW, Actor.for_user(dora),
                                  Target.study(paulas_study))
    with django_capture_on_commit_callbacks(execute=True):
        export = exports.request_export(paulas_study.patient, paula)
    export.refresh_from_db()
    import zipfile

    with storages["default"].open(export.file_key, "rb") as fp:
        report = zipfile.ZipFile(io.BytesIO(fp.read())).read("access_report.csv").decode()
    (row,) = [r for r in csv.DictReader(io.StringIO(report)) if r["who"] == "dora"]
    assert row["reads"] == "5"
    assert row["last_read"] == ReadSession.objects.get().last_read.isoformat()


def test_admins_see_viewing_sessions_with_their_count(client, alice, dora, paulas_study):
    for _ in range(3):
        read_sessions.record_read(AuditAction.VIEW, Actor.for_user(dora),
                                  Target.study(paulas_study))
    client.force_login(alice)
    page = client.get("/admin/audit/readsession/")
    assert page.status_code == 200
    assert paulas_study.study_instance_uid in page.content.decode()
    assert client.get(f"/admin/audit/readsession/{ReadSession.objects.get().pk}/change/"
                      ).status_code == 200


@pytest.mark.postgres
def test_concurrent_reads_of_one_study_count_on_one_session_and_keep_the_chain(
        transactional_db, dora):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL's row locks")
    target = Target("instance", "1.2.3.4", None, "P-1", "1.2.3")
    barrier = threading.Barrier(6)

    def read(n: int) -> None:
        barrier.wait()
        for _ in range(20):
            read_sessions.record_read(AuditAction.RETRIEVE, Actor.for_user(dora), target)
            read_sessions.record_read(AuditAction.RETRIEVE, Actor.system(f"other-{n}"), target)
        connection.close()

    threads = [threading.Thread(target=read, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    doras = ReadSession.objects.get(caller=f"user:{dora.pk}")
    assert doras.reads == 120
    assert ReadSession.objects.count() == 7
    assert AuditEvent.objects.count() == 7
    assert first_broken_link() is None


def test_series_metadata_and_frames_of_a_study_are_one_viewing_session(
        client, paula, paulas_study):
    client.force_login(paula)
    series_uids = set(Instance.objects.filter(series__study=paulas_study)
                      .values_list("series__series_instance_uid", flat=True))
    for uid in series_uids:
        response = client.get(f"/dicomweb/studies/{paulas_study.study_instance_uid}/series/"
                              f"{uid}/metadata", HTTP_ACCEPT="application/dicom+json")
        assert response.status_code == 200
        b"".join(response.streaming_content)
    n = _read_frames(client, paulas_study)
    session = ReadSession.objects.get()
    assert (session.action, session.reads) == ("retrieve", len(series_uids) + n)
    (opened,) = AuditEvent.objects.filter(action=AuditAction.RETRIEVE)
    assert opened.level == "series" and opened.detail["read_session"] == "opened"
    assert first_broken_link() is None


def test_searches_inside_one_study_are_counted_on_a_search_session_of_that_study(
        client, paula, paulas_study):
    client.force_login(paula)
    uid = paulas_study.study_instance_uid
    for path in ("series", "instances", "series", "instances"):
        response = client.get(f"/dicomweb/studies/{uid}/{path}")
        assert response.status_code == 200 and response.json()
    session = ReadSession.objects.get()
    assert (session.action, session.study_uid, session.reads) == ("search", uid, 4)
    (opened,) = AuditEvent.objects.filter(action=AuditAction.SEARCH)
    assert opened.detail["query"]["level"] == "series"
    assert opened.detail["hits"] >= 1 and opened.detail["read_session"] == "opened"
    assert first_broken_link() is None


def test_a_search_naming_one_study_by_its_uid_counts_on_that_studys_session(
        client, paula, paulas_study):
    """OHIF's first QIDO (``?StudyInstanceUID=``, twice) and its series search are one
    search session of the study, not three chained entries."""
    client.force_login(paula)
    uid = paulas_study.study_instance_uid
    for path in (f"studies?StudyInstanceUID={uid}", f"studies?StudyInstanceUID={uid}",
                 f"studies/{uid}/series"):
        response = client.get(f"/dicomweb/{path}")
        assert response.status_code == 200 and response.json()
    session = ReadSession.objects.get()
    assert (session.action, session.study_uid, session.reads) == ("search", uid, 3)
    (opened,) = AuditEvent.objects.filter(action=AuditAction.SEARCH)
    assert opened.detail["query"]["StudyInstanceUID"] == uid
    assert first_broken_link() is None


@pytest.mark.parametrize("separator", ["\\", ","])
def test_a_search_for_a_list_of_study_uids_is_chained_each_time(
        client, paula, paulas_study, separator):
    client.force_login(paula)
    uids = f"{paulas_study.study_instance_uid}{separator}1.2.3.4"
    for _ in range(2):
        response = client.get(f"/dicomweb/studies?StudyInstanceUID={uids}")
        assert response.status_code == 200 and len(response.json()) == 1
    assert AuditEvent.objects.filter(action=AuditAction.SEARCH).count() == 2
    assert not ReadSession.objects.exists()


def test_a_search_across_studies_is_still_chained_once_per_search(
        client, paula, paulas_study):
    client.force_login(paula)
    for _ in range(3):
        assert client.get("/dicomweb/studies?PatientID=*").status_code == 200
    assert AuditEvent.objects.filter(action=AuditAction.SEARCH).count() == 3
    assert not ReadSession.objects.exists()


def test_an_outsiders_search_inside_a_study_finds_nothing_and_is_chained_each_time(
        client, charlie, paulas_study):
    client.force_login(charlie)
    for _ in range(2):
        response = client.get(f"/dicomweb/studies/{paulas_study.study_instance_uid}/series")
        assert response.status_code == 200 and response.json() == []
    hits = AuditEvent.objects.filter(action=AuditAction.SEARCH, username="charlie"
                                     ).values_list("detail__hits", flat=True)
    assert list(hits) == [0, 0]
    assert not ReadSession.objects.exists()


@pytest.mark.postgres
def test_on_postgresql_a_counted_read_skips_only_its_own_wait_for_the_disk(
        transactional_db, dora):
    if connection.vendor != "postgresql":
        pytest.skip("synchronous_commit is PostgreSQL's")
    target = Target("instance", "1.2.3.4", None, "P-1", "1.2.3")
    actor = Actor.for_user(dora)
    read_sessions.record_read(AuditAction.RETRIEVE, actor, target)
    with CaptureQueriesContext(connection) as queries:
        for _ in range(5):
            read_sessions.record_read(AuditAction.RETRIEVE, actor, target)
    assert len(queries) == 5
    assert all("synchronous_commit" in q["sql"] and "UPDATE" in q["sql"] for q in queries)
    assert ReadSession.objects.get().reads == 6
    # Only those one-statement transactions: the chained entries still wait for the disk.
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"
    assert first_broken_link() is None


def test_a_revoked_grant_refuses_the_next_frame_although_the_session_is_open(
        client, dora, paulas_study, paulas_record):
    from django.utils import timezone

    from accounts.models import AccessGrant
    from tests.conftest import story_clinic

    grant = AccessGrant.objects.create(doctor=dora, patient=paulas_record,
                                       clinic=story_clinic())
    client.force_login(dora)
    first, second, third = _frame_urls(paulas_study)[:3]
    assert client.get(first, HTTP_ACCEPT=OHIF_ACCEPT).status_code == 200
    assert client.get(second, HTTP_ACCEPT=OHIF_ACCEPT).status_code == 200
    AccessGrant.objects.filter(pk=grant.pk).update(ends=timezone.now())
    assert client.get(third, HTTP_ACCEPT=OHIF_ACCEPT).status_code == 404
    assert ReadSession.objects.get().reads == 2
    assert AuditEvent.objects.filter(username="dora", outcome=Outcome.DENIED).count() == 1
