"""Every HL7 version the listener takes (2.3, 2.3.1, 2.4, 2.5, 2.5.1): an ORM^O01 order and
an ADT^A08 update are applied, and the ACK answers in the sender's version (MSH-12), its
ERR in that version's layout: ERR-1 (a CM of location^^^code&text&table) before 2.5, and
ERR-3 (the HL7 error code), ERR-4 (severity) and ERR-8 (user message) from 2.5 on."""

from __future__ import annotations

import datetime

import hl7
import pytest

from imaging.models import Patient
from orders.hl7_messages import APPLICATION_ERROR, REQUIRED_FIELD_MISSING
from orders.models import Hl7Peer, ScheduledProcedure
from tests.hl7_support import MllpClient, adt_a08, hl7_listener, msa, orm

pytestmark = pytest.mark.django_db(transaction=True)

VERSIONS = ["2.3", "2.3.1", "2.4", "2.5", "2.5.1"]


@pytest.fixture
def mllp(clinic):
    Hl7Peer.objects.create(name="EHR Sul", host="127.0.0.1", sending_application="EHR",
                           sending_facility="SUL", clinic=clinic)
    with hl7_listener() as server:
        client = MllpClient(server.port)
        yield client
        client.close()


def _field(message: hl7.Message, segment: str, n: int) -> str:
    found = message.segment(segment)
    return str(found[n]) if len(found) > n else ""


@pytest.mark.parametrize("version", VERSIONS)
def test_an_order_in_each_version_is_scheduled_and_acknowledged_in_that_version(
        mllp, version):
    ack = mllp.send(orm("V-1", "SUL-1", "ACCV1", version=version))
    assert msa(ack)[:2] == ("AA", "V-1")
    assert _field(ack, "MSH", 12) == version
    assert _field(ack, "MSH", 9) == "ACK^O01^ACK"
    assert [str(segment[0]) for segment in ack] == ["MSH", "MSA"]
    procedure = ScheduledProcedure.objects.get(accession_number="ACCV1")
    assert (procedure.modality, procedure.scheduled_station_ae_title,
            procedure.scheduled_date) == ("CT", "CT01", datetime.date(2026, 3, 10))


@pytest.mark.parametrize("version", VERSIONS)
def test_an_adt_a08_in_each_version_updates_the_patient_and_is_acknowledged_in_it(
        mllp, version):
    assert msa(mllp.send(orm("V-2", "SUL-2", "ACCV2", version=version)))[0] == "AA"
    ack = mllp.send(adt_a08("V-3", "SUL-2", "Souza Lima^Maria", "19800518", "F",
                            version=version))
    assert msa(ack)[:2] == ("AA", "V-3")
    assert _field(ack, "MSH", 12) == version
    assert _field(ack, "MSH", 9) == "ACK^A08^ACK"
    patient = Patient.objects.get(patient_id="SUL-2")
    assert (patient.name, patient.birth_date) == ("Souza Lima^Maria",
                                                  datetime.date(1980, 5, 18))


@pytest.mark.parametrize("version", ["2.3", "2.3.1", "2.4"])
def test_before_2_5_the_reason_is_in_msa_3_and_in_err_1(mllp, version):
    ack = mllp.send(orm("V-4", "SUL-4", "ACCV4", modality="", version=version))
    code, _, text = msa(ack)
    assert (code, _field(ack, "MSH", 12)) == ("AE", version)
    assert "no modality" in text
    err = ack.segment("ERR")
    assert len(err) == 2  # ERR-1 only
    location = err[1][0]  # ERR-1: segment^position^field^code&text&table
    code_and_text = location[3]
    assert str(code_and_text[0]) == REQUIRED_FIELD_MISSING
    assert "no modality" in str(code_and_text[1])
    assert str(code_and_text[2]) == "HL70357"


@pytest.mark.parametrize("version", ["2.5", "2.5.1"])
def test_from_2_5_the_reason_is_in_err_3_with_severity_and_user_message(mllp, version):
    ack = mllp.send(orm("V-5", "SUL-5", "ACCV5", modality="", version=version))
    code, _, text = msa(ack)
    assert (code, _field(ack, "MSH", 12)) == ("AE", version)
    assert "no modality" in text
    err = ack.segment("ERR")
    assert _field(ack, "ERR", 1) == "" and _field(ack, "ERR", 2) == ""
    hl7_error = err[3][0]  # ERR-3: code^text^HL70357
    assert (str(hl7_error[0]), str(hl7_error[2])) == (REQUIRED_FIELD_MISSING, "HL70357")
    assert "no modality" in str(hl7_error[1])
    assert _field(ack, "ERR", 4) == "E"
    assert "no modality" in _field(ack, "ERR", 8)


@pytest.mark.parametrize("version", VERSIONS)
def test_an_adt_a08_for_a_patient_not_in_the_archive_is_ae_in_that_version(mllp, version):
    ack = mllp.send(adt_a08("V-6", "SUL-404", "Ninguem^Nada", "19800101", "M",
                            version=version))
    code, _, text = msa(ack)
    assert (code, _field(ack, "MSH", 12)) == ("AE", version)
    assert "not in the archive" in text
    assert "not in the archive" in str(ack.segment("ERR"))
    assert APPLICATION_ERROR in str(ack.segment("ERR"))
