"""Orders in over HL7 v2/MLLP: the clinic's EHR (a real MLLP client on a real socket)
schedules, changes and cancels procedures and updates patients; every message is kept raw,
audited and acknowledged AA, AE with its reason, or AR.

The EHR of Clínica Sul ("EHR"/"SUL" at 127.0.0.1) is an HL7 peer; Clínica Norte's records
are never its to touch.
"""

from __future__ import annotations

import datetime
import threading

import hl7
import pytest

from accounts.models import Clinic
from audit.models import AuditAction, AuditEvent, Outcome
from imaging.models import Patient
from orders.models import Hl7Message, Hl7Peer, ScheduledProcedure
from tests.hl7_support import MllpClient, adt_a08, hl7_listener, msa, msh, omi, orm, pid

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def ehr(clinic) -> Hl7Peer:
    return Hl7Peer.objects.create(name="EHR Sul", host="127.0.0.1", sending_application="EHR",
                                  sending_facility="SUL", clinic=clinic)


@pytest.fixture
def listener(ehr):
    with hl7_listener() as server:
        yield server


@pytest.fixture
def mllp(listener):
    client = MllpClient(listener.port)
    yield client
    client.close()


def test_a_new_order_schedules_a_procedure_for_a_new_patient_of_the_peers_clinic(
    mllp, clinic
):
    ack = mllp.send(orm("MSG-1", "SUL-1001", "ACC1001"))
    assert msa(ack)[:2] == ("AA", "MSG-1")
    assert str(ack.segment("MSH")[9]) == "ACK^O01^ACK"
    patient = Patient.objects.get(patient_id="SUL-1001")
    assert (patient.name, patient.birth_date, patient.sex, patient.clinic) == (
        "Souza^Maria^Clara", datetime.date(1980, 5, 17), "F", clinic)
    procedure = ScheduledProcedure.objects.get(accession_number="ACC1001")
    assert procedure.patient == patient and procedure.clinic == clinic
    assert procedure.modality == "CT"
    assert procedure.scheduled_station_ae_title == "CT01"
    assert procedure.scheduled_date == datetime.date(2026, 3, 10)
    assert procedure.scheduled_time == datetime.time(14, 30)
    assert procedure.requested_procedure_id == "RPACC1001"
    assert procedure.requested_procedure_description == "TC de tórax"
    assert procedure.referring_physician == "Ramos^Paulo"
    assert procedure.priority == "ROUTINE"
    assert (procedure.placer_order_number, procedure.filler_order_number) == (
        "PACC1001", "FACC1001")
    assert procedure.status == ScheduledProcedure.Status.SCHEDULED


def test_each_message_is_kept_raw_and_audited_under_the_sender(mllp, ehr):
    message = orm("MSG-2", "SUL-1002", "ACC1002")
    mllp.send(message)
    kept = Hl7Message.objects.get(control_id="MSG-2")
    assert kept.raw == message
    assert (kept.peer, kept.message_type, kept.outcome) == (ehr, "ORM^O01", "AA")
    entry = AuditEvent.objects.get(detail__control_id="MSG-2")
    assert (entry.action, entry.outcome, entry.peer_ae, entry.ip) == (
        AuditAction.STORE, Outcome.ALLOWED, "EHR", "127.0.0.1")
    assert entry.patient_ref == "SUL-1002"


def test_the_same_accession_again_changes_the_order_and_a_cancel_cancels_it(mllp):
    assert msa(mllp.send(orm("MSG-3", "SUL-1003", "ACC1003")))[0] == "AA"
    assert msa(mllp.send(orm("MSG-4", "SUL-1003", "ACC1003", control="XO", station="CT02",
                             start="202603121000", priority="S")))[0] == "AA"
    procedure = ScheduledProcedure.objects.get(accession_number="ACC1003")
    assert (procedure.scheduled_station_ae_title, procedure.scheduled_date,
            procedure.priority) == ("CT02", datetime.date(2026, 3, 12), "STAT")
    assert msa(mllp.send(orm("MSG-5", "SUL-1003", "ACC1003", control="CA")))[0] == "AA"
    procedure.refresh_from_db()
    assert procedure.status == ScheduledProcedure.Status.CANCELLED
    assert ScheduledProcedure.objects.count() == 1


def test_an_omi_order_in_v2_5_1_schedules_from_its_ipc_and_tq1(mllp):
    ack = mllp.send(omi("MSG-6", "SUL-1006", "ACC1006"))
    assert msa(ack)[0] == "AA", msa(ack)
    assert str(ack.segment("MSH")[12]) == "2.5.1"
    procedure = ScheduledProcedure.objects.get(accession_number="ACC1006")
    assert (procedure.modality, procedure.scheduled_station_ae_title,
            procedure.requested_procedure_id, procedure.priority) == (
        "MR", "MR01", "RPACC1006", "STAT")
    assert procedure.scheduled_date == datetime.date(2026, 3, 11)
    assert procedure.patient.name == "Lima^Jorge"


def test_adt_a08_updates_the_patients_demographics(mllp):
    mllp.send(orm("MSG-7", "SUL-1007", "ACC1007"))
    ack = mllp.send(adt_a08("MSG-8", "SUL-1007", "Souza Lima^Maria^Clara", "19800518", "F"))
    assert msa(ack)[0] == "AA"
    patient = Patient.objects.get(patient_id="SUL-1007")
    assert (patient.name, patient.birth_date) == ("Souza Lima^Maria^Clara",
                                                  datetime.date(1980, 5, 18))


def test_several_messages_on_one_connection_and_connections_at_once(listener):
    def send_orders(n: int) -> None:
        client = MllpClient(listener.port)
        try:
            for i in range(3):
                ack = client.send(orm(f"C{n}-{i}", f"SUL-2{n}{i}", f"ACC2{n}{i}"))
                answers.append(msa(ack)[0])
        finally:
            client.close()

    answers: list[str] = []
    threads = [threading.Thread(target=send_orders, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert answers == ["AA"] * 12
    assert ScheduledProcedure.objects.count() == 12


@pytest.mark.parametrize(
    ("message", "code", "reason"),
    [
        (msh("ORU^R01", "BAD-1") + "\r" + pid("SUL-9"), "AR", "ORU^R01 is not accepted"),
        (msh("ORM^O01", "BAD-2", version="2.6") + "\r" + pid("SUL-9"), "AR",
         "version 2.6 is not supported"),
        ("HELLO|this is not HL7", "AR", "does not start with an MSH segment"),
        (msh("ORM^O01", "BAD-3") + "\rORC|NW|P1|F1", "AE", "no PID segment"),
        (orm("BAD-4", "SUL-9", "ACC9", modality=""), "AE", "no modality"),
        (orm("BAD-5", "SUL-9", "ACC9", start="2026-03-10"), "AE", "is not a date and time"),
        (orm("BAD-6", "SUL-9", "NOSUCH", control="CA"), "AE", "no order NOSUCH"),
        (orm("BAD-7", "SUL-9", "ACC9", control="ZZ"), "AE", "ORC-1 (order control) 'ZZ'"),
    ],
)
def test_what_cannot_be_applied_is_answered_ae_or_ar_with_the_reason_and_nothing_stored(
    mllp, message, code, reason
):
    ack = mllp.send(message)
    got, _, text = msa(ack)
    assert got == code
    assert reason in text.replace("\\S\\", "^")
    assert reason in str(ack.segment("ERR")).replace("\\S\\", "^")
    assert not ScheduledProcedure.objects.exists()
    assert not Patient.objects.exists()
    kept = Hl7Message.objects.get()
    assert (kept.outcome, kept.raw) == (code, message)
    assert reason in kept.reason
    assert AuditEvent.objects.filter(outcome=Outcome.FAILED, detail__ack=code).count() == 1


def test_an_unknown_sender_is_rejected_and_its_attempt_is_on_the_record(mllp):
    ack = mllp.send(orm("UNK-1", "SUL-9", "ACC9", app="OTHER"))
    code, control, text = msa(ack)
    assert (code, control) == ("AR", "UNK-1")
    assert "not a known HL7 peer" in text
    assert not Patient.objects.exists()
    entry = AuditEvent.objects.get(action=AuditAction.ASSOCIATION)
    assert (entry.outcome, entry.peer_ae) == (Outcome.DENIED, "OTHER")


def test_unknown_senders_are_accepted_with_hl7_allow_unknown_peers(mllp, settings, clinic):
    settings.HL7_ALLOW_UNKNOWN_PEERS = True
    assert msa(mllp.send(orm("UNK-2", "SUL-10", "ACC10", app="OTHER")))[0] == "AA"
    assert Patient.objects.get(patient_id="SUL-10").clinic == clinic  # the only clinic


def test_a_patient_of_another_clinic_is_not_the_peers_to_touch(mllp):
    norte = Clinic.objects.create(name="Clínica Norte")
    Patient.objects.create(patient_id="NORTE-1", name="Alves^Rui", clinic=norte)
    code, _, text = msa(mllp.send(orm("X-1", "NORTE-1", "ACC11")))
    assert code == "AE"
    assert "another clinic" in text
    assert Patient.objects.get(patient_id="NORTE-1").name == "Alves^Rui"
    assert not ScheduledProcedure.objects.exists()


def test_bytes_that_are_not_mllp_get_one_ar_and_the_connection_is_closed(mllp):
    mllp.send_raw(b"GET / HTTP/1.1\r\nHost: portal\r\n\r\n")
    ack = msa(hl7.parse(mllp.read_frame().decode()))
    assert ack[0] == "AR"
    assert "not MLLP" in ack[2]
    assert mllp.closed_by_peer()
    assert Hl7Message.objects.get().outcome == "AR"


def test_a_message_over_the_size_limit_is_refused(ehr):
    with hl7_listener(max_bytes=2048) as server:
        client = MllpClient(server.port)
        try:
            client.send_raw(b"\x0b" + orm("BIG", "SUL-12", "ACC12").encode()
                            + b"\rNTE|1||" + b"x" * 4096 + b"\x1c\x0d")
            code, _, text = msa(hl7.parse(client.read_frame().decode()))
            assert code == "AR"
            assert "larger than 2048 bytes" in text
            assert client.closed_by_peer()
        finally:
            client.close()
    assert not ScheduledProcedure.objects.exists()
