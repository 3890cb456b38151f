"""Results out over HL7 v2/MLLP: when dora signs paula's report (or amends it), the clinic's
EHR gets an ORU^R01 with the patient, the order, the text line by line, the signature and a
link to the study; it counts as delivered only when the EHR acknowledges it AA, and until
then it is kept, retried and audited.

The EHR is a real MLLP server on a loopback socket (tests/ehr_support.py), told what to
answer.
"""

from __future__ import annotations

import datetime
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import hl7
import pytest
from django.db import connections, transaction
from django.urls import reverse
from django.utils import timezone

from accounts.models import AccessGrant, User
from audit.models import AuditAction, AuditEvent, Outcome
from audit.trail import Actor
from imaging.models import Study
from orders import results, tasks
from orders.models import OutboundMessage, ScheduledProcedure
from portal.celery import app
from reports import service
from reports.models import Report
from tests.celery_support import REDIS_URL, routed, running_worker
from tests.ehr_support import AE, AR, CA, SILENT, WRONG_ID, FakeEhr, fake_ehr

pytestmark = pytest.mark.django_db(transaction=True)

State = OutboundMessage.State
FINDINGS = ("Nódulo de 4 mm | margem ^ irregular ~ comparar & rever \\ prévio.\n"
            "\n"
            "Coração e mediastino sem alterações.")
IMPRESSION = "Achado incidental; controle em 12 meses."
TEXT = service.ReportText(FINDINGS, IMPRESSION)
AMENDED = service.ReportText("Nódulo de 6 mm no lobo superior direito.", "Biópsia sugerida.")
REASON = "Medida revista | comparação com exame de 2025."
BASE_URL = "https://portal.example.org"


@pytest.fixture
def ehr(settings) -> Iterator[FakeEhr]:
    """Clínica Sul's EHR, configured as where results go."""
    with fake_ehr() as running:
        point_at(settings, running.port)
        yield running


def point_at(settings, port: int) -> None:
    settings.HL7_RESULTS_HOST = "127.0.0.1"
    settings.HL7_RESULTS_PORT = port
    settings.HL7_RESULTS_CONNECT_TIMEOUT = 2.0
    settings.HL7_RESULTS_ACK_TIMEOUT = 1.0
    settings.HL7_RESULTS_RETRY_SECONDS = 0.0
    settings.HL7_RESULTS_MAX_ATTEMPTS = 5
    settings.HL7_RESULTS_SENDING_APPLICATION = "PORTAL"
    settings.HL7_RESULTS_SENDING_FACILITY = "SUL-IMAGEM"
    settings.HL7_RESULTS_RECEIVING_APPLICATION = "EHR"
    settings.HL7_RESULTS_RECEIVING_FACILITY = "SUL"
    settings.PORTAL_BASE_URL = BASE_URL


@pytest.fixture
def down(settings) -> int:
    """A loopback port where the EHR is configured but nothing listens (yet)."""
    with fake_ehr() as probe:
        port = probe.port
    point_at(settings, port)
    return port


@pytest.fixture
def doctor(dora: User, clinic, paulas_record) -> User:
    AccessGrant.objects.create(doctor=dora, patient=paulas_record, clinic=clinic)
    return dora


@pytest.fixture
def order(paulas_study: Study, clinic) -> ScheduledProcedure:
    """The EHR's order for paula's CT, as its ORM^O01 scheduled it."""
    return ScheduledProcedure.objects.create(
        patient=paulas_study.patient, clinic=clinic,
        accession_number=paulas_study.accession_number, requested_procedure_id="RP-1",
        requested_procedure_description="TC de tórax", modality="CT",
        scheduled_date=datetime.date(2026, 3, 2), referring_physician="Ramos^Paulo",
        placer_order_number="P-ACC-1", filler_order_number="F-ACC-1",
        status=ScheduledProcedure.Status.COMPLETED)


def finalize(user: User, study: Study, text: service.ReportText = TEXT) -> Report:
    return service.finalize(user, Actor.for_user(user), study, text)


def amend(user: User, study: Study) -> Report:
    return service.amend(user, Actor.for_user(user), study, AMENDED, REASON)


def sent_for(report: Report) -> OutboundMessage:
    return OutboundMessage.objects.get(report=report)


def segments(message: hl7.Message, name: str) -> list[hl7.Segment]:
    return [s for s in message if str(s[0]) == name]


def field(message: hl7.Message, segment: hl7.Segment, n: int) -> str:
    """Field ``n`` of ``segment``, unescaped as the EHR reads it."""
    return message.unescape(str(segment[n])) if len(segment) > n else ""


# --- what the EHR receives ---------------------------------------------------------------


def test_a_final_report_arrives_as_an_oru_with_the_patient_the_order_and_the_signature(
    ehr, doctor, order, paulas_study
):
    report = finalize(doctor, paulas_study)
    assert len(ehr.received) == 1
    message = ehr.received[0].message
    msh, pid = message.segment("MSH"), message.segment("PID")
    orc, obr = message.segment("ORC"), message.segment("OBR")
    assert str(msh[9]) == "ORU^R01^ORU_R01" and str(msh[12]) == "2.5.1"
    assert str(msh[18]) == "UNICODE UTF-8"
    assert [str(msh[n]) for n in (3, 4, 5, 6)] == ["PORTAL", "SUL-IMAGEM", "EHR", "SUL"]
    assert str(msh[10]) == sent_for(report).control_id
    assert str(pid[3]) == "PAULA-001^^^DEMO^MR"  # the issuer of her ID, as archived
    assert str(pid[5]) == "Pereira^Paula"
    assert (str(pid[7]), str(pid[8])) == ("19750412", "F")
    assert [str(orc[n]) for n in (1, 2, 3)] == ["RE", "P-ACC-1", "F-ACC-1"]
    assert str(orc[12]) == "^Ramos^Paulo"
    assert (str(obr[2]), str(obr[3])) == ("P-ACC-1", "F-ACC-1")
    assert field(message, obr, 4) == "^TC de tórax"
    assert str(obr[7]).startswith("20260302")  # when the CT was taken
    assert str(obr[16]) == "^Ramos^Paulo"
    assert str(obr[18]) == "ACC-PAULA-1"
    assert str(obr[19]) == "RP-1"
    assert report.signed is not None
    assert str(obr[22]) == timezone.localtime(report.signed).strftime("%Y%m%d%H%M%S%z")
    assert str(obr[25]) == "F"
    assert str(obr[32]) == "CRM-RS 12345&Lima&Dora"  # who signed: CRM, family, given


def test_the_report_text_arrives_one_line_per_obx_with_its_delimiters_escaped_and_accents_intact(
    ehr, doctor, order, paulas_study
):
    finalize(doctor, paulas_study)
    received = ehr.received[0]
    text = [s for s in segments(received.message, "OBX") if str(s[2]) == "TX"]
    findings = [field(received.message, s, 5) for s in text if str(s[3]).startswith("121071")]
    impression = [field(received.message, s, 5) for s in text
                  if str(s[3]).startswith("121073")]
    assert findings == FINDINGS.split("\n")
    assert impression == [IMPRESSION]
    assert all(str(s[11]) == "F" and str(s[16]) == "CRM-RS 12345^Lima^Dora" for s in text)
    # As the wire carries it: the delimiters escaped, the accents as UTF-8, not \X..\.
    assert ("Nódulo de 4 mm \\F\\ margem \\S\\ irregular \\R\\ comparar \\T\\ rever "
            "\\E\\ prévio.") in received.text
    assert "\\X" not in received.text
    assert [int(str(s[1])) for s in segments(received.message, "OBX")] == list(
        range(1, len(segments(received.message, "OBX")) + 1))


def test_the_oru_links_to_the_study_in_the_portal(ehr, doctor, order, paulas_study):
    finalize(doctor, paulas_study)
    message = ehr.received[0].message
    (link,) = [s for s in segments(message, "OBX") if str(s[2]) == "RP"]
    url = f"{BASE_URL}/imaging/studies/{paulas_study.study_instance_uid}/"
    assert field(message, link, 5) == f"{url}^PORTAL^TEXT^HTML"
    assert str(link[5]).split("^")[0] == url


def test_an_amendment_is_sent_as_a_correction_with_its_reason(ehr, doctor, order,
                                                              paulas_study):
    first = finalize(doctor, paulas_study)
    second = amend(doctor, paulas_study)
    assert len(ehr.received) == 2
    message = ehr.received[1].message
    assert str(message.segment("OBR")[25]) == "C"
    assert {str(s[11]) for s in segments(message, "OBX")} == {"C"}
    assert [field(message, s, 3) for s in segments(message, "NTE")] == [REASON]
    findings = [field(message, s, 5) for s in segments(message, "OBX")
                if str(s[3]).startswith("121071")]
    assert findings == [AMENDED.findings]
    assert sent_for(second).control_id != sent_for(first).control_id
    assert [m.result_status for m in OutboundMessage.objects.order_by("pk")] == ["F", "C"]


def test_delivery_is_acknowledged_and_audited(ehr, doctor, order, paulas_study):
    report = finalize(doctor, paulas_study)
    sent = sent_for(report)
    assert (sent.state, sent.ack_code, sent.attempts, sent.last_error) == (
        State.ACKNOWLEDGED, "AA", 1, "")
    assert sent.acknowledged is not None and "MSA|AA|" + sent.control_id in sent.ack
    entry = AuditEvent.objects.get(action=AuditAction.EXPORT, detail__control_id=sent.control_id)
    assert (entry.outcome, entry.study_uid, entry.patient_ref) == (
        Outcome.ALLOWED, paulas_study.study_instance_uid, "PAULA-001^DEMO")
    assert entry.detail["destination"] == f"127.0.0.1:{ehr.port}"
    assert (entry.detail["ack"], entry.detail["attempt"]) == ("AA", 1)


def test_the_message_is_queued_with_the_report_and_rolled_back_with_it(ehr, doctor, order,
                                                                       paulas_study):
    class Crash(Exception):
        pass

    with pytest.raises(Crash), transaction.atomic():
        report = finalize(doctor, paulas_study)
        assert sent_for(report).state == State.PENDING  # written, not sent before the commit
        assert ehr.received == []
        raise Crash
    assert not Report.objects.exists() and not OutboundMessage.objects.exists()
    assert ehr.received == []


def test_nothing_is_queued_without_an_ehr_configured(settings, doctor, order, paulas_study):
    settings.HL7_RESULTS_HOST = ""
    finalize(doctor, paulas_study)
    assert not OutboundMessage.objects.exists()


def test_a_preliminary_report_is_not_sent(ehr, doctor, order, paulas_study):
    service.save_preliminary(doctor, Actor.for_user(doctor), paulas_study, TEXT)
    assert not OutboundMessage.objects.exists() and ehr.received == []


# --- what does not count as delivered ----------------------------------------------------


def test_an_ae_keeps_it_pending_with_the_reason_and_a_retry_delivers_it_later(
    ehr, doctor, order, paulas_study
):
    ehr.answer(AE)
    sent = sent_for(finalize(doctor, paulas_study))
    assert (sent.state, sent.ack_code, sent.attempts) == (State.PENDING, "AE", 1)
    assert sent.last_error == "AE: Paciente não encontrado ^ PID-3"
    failed = AuditEvent.objects.get(action=AuditAction.EXPORT, outcome=Outcome.FAILED)
    assert failed.reason == sent.last_error and failed.detail["ack"] == "AE"

    assert tasks.send_result(sent.pk) == "acknowledged"
    sent.refresh_from_db()
    assert (sent.state, sent.attempts, sent.last_error) == (State.ACKNOWLEDGED, 2, "")
    # The same message again, under the same control ID, so the EHR can tell.
    assert ehr.delivered(sent.control_id) == 2
    assert ehr.received[0].text == ehr.received[1].text


def test_an_enhanced_mode_commit_accept_counts_as_delivered(ehr, doctor, order,
                                                            paulas_study):
    ehr.answer(CA)
    sent = sent_for(finalize(doctor, paulas_study))
    assert (sent.state, sent.ack_code) == (State.ACKNOWLEDGED, "CA")


def test_an_acknowledgement_for_another_message_does_not_count(ehr, doctor, order,
                                                                paulas_study):
    ehr.answer(WRONG_ID)
    sent = sent_for(finalize(doctor, paulas_study))
    assert sent.state == State.PENDING
    assert "is for message SOMETHING-ELSE, not " + sent.control_id in sent.last_error


def test_no_answer_within_the_timeout_keeps_it_pending(ehr, doctor, order, paulas_study):
    ehr.answer(SILENT)
    sent = sent_for(finalize(doctor, paulas_study))
    assert (sent.state, sent.ack_code, sent.ack) == (State.PENDING, "", "")
    assert sent.last_error == f"no acknowledgement from 127.0.0.1:{ehr.port} within 1 s"


def test_a_message_not_acknowledged_is_tried_again_only_after_its_backoff(
    settings, ehr, doctor, order, paulas_study
):
    settings.HL7_RESULTS_RETRY_SECONDS = 3600.0
    ehr.answer(AE)
    sent = sent_for(finalize(doctor, paulas_study))
    assert results.due(10) == []
    assert tasks.send_result(sent.pk) == "busy"
    assert ehr.delivered(sent.control_id) == 1


def test_after_the_last_attempt_it_is_failed_and_an_admin_resends_it(
    settings, ehr, doctor, order, paulas_study, client, alice
):
    settings.HL7_RESULTS_MAX_ATTEMPTS = 2
    ehr.answer(AR, AR)
    sent = sent_for(finalize(doctor, paulas_study))
    assert tasks.send_result(sent.pk) == "failed"
    sent.refresh_from_db()
    assert (sent.state, sent.attempts) == (State.FAILED, 2)
    assert tasks.send_result(sent.pk) == "already"
    assert tasks.sweep_results() == 0

    client.force_login(alice)
    changelist = reverse("admin:orders_outboundmessage_changelist")
    listed = client.get(changelist, {"state__exact": "failed"})
    assert listed.status_code == 200 and sent.control_id in listed.content.decode()
    answer = client.post(changelist, {"action": "resend", "_selected_action": [sent.pk]},
                         follow=True)
    assert answer.status_code == 200
    sent.refresh_from_db()
    assert (sent.state, sent.attempts) == (State.ACKNOWLEDGED, 1)
    assert ehr.delivered(sent.control_id) == 3


def test_the_peer_down_leaves_it_pending_and_the_sweep_delivers_it_once_back(
    down, doctor, order, paulas_study
):
    report = finalize(doctor, paulas_study)
    sent = sent_for(report)
    assert sent.state == State.PENDING and sent.attempts == 1
    assert sent.last_error.startswith(f"127.0.0.1:{down}: ")  # refused: nothing listens
    with fake_ehr(down) as ehr:
        assert tasks.sweep_results() == 1
        assert ehr.delivered(sent.control_id) == 1
    sent.refresh_from_db()
    assert sent.state == State.ACKNOWLEDGED and sent.attempts == 2
    assert tasks.sweep_results() == 0


def test_an_amendment_never_overtakes_the_final_report_it_amends(down, doctor, order,
                                                                 paulas_study):
    final = sent_for(finalize(doctor, paulas_study))
    amendment = sent_for(amend(doctor, paulas_study))
    assert amendment.attempts == 0  # held back while the final report is pending
    with fake_ehr(down) as ehr:
        tasks.sweep_results()
        assert [r.control_id for r in ehr.received] == [final.control_id,
                                                        amendment.control_id]
    assert set(OutboundMessage.objects.values_list("state", flat=True)) == {
        State.ACKNOWLEDGED}


def test_a_message_left_in_flight_by_a_worker_that_died_is_sent_again_after_its_lease(
    down, doctor, order, paulas_study
):
    sent = sent_for(finalize(doctor, paulas_study))
    # Ten minutes ago it was due, a worker claimed it and died before recording anything.
    then = timezone.now() - datetime.timedelta(minutes=10)
    OutboundMessage.objects.filter(pk=sent.pk).update(due=then)
    assert results.claim(sent.pk, now=then)
    sent.refresh_from_db()
    assert sent.state == State.SENT and sent.due < timezone.now()
    with fake_ehr(down) as ehr:
        assert tasks.sweep_results() == 1
        assert ehr.delivered(sent.control_id) == 1
    sent.refresh_from_db()
    assert (sent.state, sent.attempts) == (State.ACKNOWLEDGED, 3)


def test_a_message_in_flight_is_not_taken_by_the_sweep(down, doctor, order, paulas_study):
    sent = sent_for(finalize(doctor, paulas_study))
    assert results.claim(sent.pk)  # a worker is sending it now
    assert results.due(10) == [] and tasks.sweep_results() == 0


def test_two_concurrent_senders_deliver_it_exactly_once(settings, down, doctor, order,
                                                        paulas_study):
    sent = sent_for(finalize(doctor, paulas_study))  # pending: the EHR was down
    settings.HL7_RESULTS_ACK_TIMEOUT = 10.0
    outcomes: list[str] = []
    start = threading.Barrier(2)

    def sender() -> None:
        try:
            start.wait(10)
            outcomes.append(results.send(sent.pk).outcome.value)
        finally:
            connections.close_all()

    with fake_ehr(down, delay=1.0) as ehr:  # the first is still waiting for its ACK
        threads = [threading.Thread(target=sender) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert ehr.delivered(sent.control_id) == 1
    assert sorted(outcomes) == ["acknowledged", "busy"]
    sent.refresh_from_db()
    assert (sent.state, sent.attempts) == (State.ACKNOWLEDGED, 2)


# --- through Redis, to a real Celery worker ----------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not REDIS_URL, reason="needs REDIS_URL pointing at a Redis server")
def test_a_celery_worker_sends_the_result_from_redis_and_retries_an_ae_until_delivered(
    ehr, doctor, order, paulas_study, dicom_storage: Path, tmp_path: Path
):
    queue = f"test-results-{uuid.uuid4().hex[:12]}"
    ehr.answer(AE)
    worker_env = {"HL7_RESULTS_RETRY_SECONDS": "0", "HL7_RESULTS_ACK_TIMEOUT": "5",
                  "HL7_RESULTS_CONNECT_TIMEOUT": "5"}
    with running_worker(queue, dicom_storage, tmp_path / "worker.log", worker_env) as log, \
            routed("orders.tasks.*", queue):
        app.conf.task_always_eager = False
        report = finalize(doctor, paulas_study)
        sent = sent_for(report)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            sent.refresh_from_db()
            if sent.state == State.ACKNOWLEDGED:
                break
            time.sleep(0.2)
        assert sent.state == State.ACKNOWLEDGED, log.read_text()
    assert sent.attempts == 2 and ehr.delivered(sent.control_id) == 2
    assert list(AuditEvent.objects.filter(action=AuditAction.EXPORT).order_by("seq")
                .values_list("outcome", flat=True)) == [Outcome.FAILED, Outcome.ALLOWED]
