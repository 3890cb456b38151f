"""Staff of a clinic without an EHR feed enter an order by hand; outsiders get 404."""

from __future__ import annotations

import datetime

import pytest

from accounts.models import Clinic
from audit.models import AuditAction, AuditEvent
from imaging.models import Patient
from orders.models import ScheduledProcedure

pytestmark = pytest.mark.django_db

ORDER = {"patient_id": "SUL-50", "patient_name": "Souza^Ana", "accession_number": "M50",
         "modality": "CT", "station": "CT01", "scheduled": "2026-03-10 14:30",
         "description": "TC de tórax", "priority": "ROUTINE",
         "referring_physician": "Ramos^Paulo", "birth_date": "1980-05-17", "sex": "F"}


def test_a_technician_schedules_an_order_for_her_clinic(client, tina, clinic):
    client.force_login(tina)
    page = client.get("/orders/new/", HTTP_ACCEPT_LANGUAGE="pt-br")
    assert page.status_code == 200
    assert "Novo pedido" in page.content.decode()
    response = client.post("/orders/new/", {**ORDER, "clinic": clinic.pk})
    assert response.status_code == 302
    procedure = ScheduledProcedure.objects.get(accession_number="M50")
    assert (procedure.clinic, procedure.patient.patient_id, procedure.scheduled_date) == (
        clinic, "SUL-50", datetime.date(2026, 3, 10))


def test_another_clinic_cannot_be_chosen(client, tina):
    norte = Clinic.objects.create(name="Clínica Norte")
    client.force_login(tina)
    response = client.post("/orders/new/", {**ORDER, "clinic": norte.pk})
    assert response.status_code == 200
    assert not ScheduledProcedure.objects.exists()


def test_a_doctor_or_a_patient_gets_404(client, dora, charlie):
    for user in (dora, charlie):
        client.force_login(user)
        assert client.get("/orders/new/").status_code == 404


def test_the_order_carries_its_referring_physician_and_a_new_patient_her_birth_and_sex(
        client, tina, clinic):
    client.force_login(tina)
    assert client.post("/orders/new/", {**ORDER, "clinic": clinic.pk}).status_code == 302
    procedure = ScheduledProcedure.objects.get(accession_number="M50")
    assert (procedure.referring_physician, procedure.priority) == ("Ramos^Paulo", "ROUTINE")
    patient = procedure.patient
    assert (patient.name, patient.birth_date, patient.sex) == (
        "Souza^Ana", datetime.date(1980, 5, 17), "F")
    entry = AuditEvent.objects.get(action=AuditAction.STORE)
    assert (entry.username, entry.patient_ref, entry.detail["order"]) == (
        "tina", "SUL-50", "created")


def test_birth_date_and_sex_are_optional_and_never_overwrite_a_known_record(
        client, tina, clinic):
    Patient.objects.create(patient_id="SUL-50", name="Souza^Ana", clinic=clinic,
                           birth_date=datetime.date(1979, 1, 2), sex="F")
    client.force_login(tina)
    response = client.post("/orders/new/", {**ORDER, "clinic": clinic.pk,
                                            "birth_date": "1980-05-17", "sex": "M"})
    assert response.status_code == 302
    patient = Patient.objects.get(patient_id="SUL-50")
    assert (patient.birth_date, patient.sex) == (datetime.date(1979, 1, 2), "F")
    without = {k: v for k, v in ORDER.items()
               if k not in ("birth_date", "sex", "referring_physician")}
    response = client.post("/orders/new/", {**without, "clinic": clinic.pk,
                                            "patient_id": "SUL-51", "accession_number": "M51"})
    assert response.status_code == 302
    assert ScheduledProcedure.objects.get(accession_number="M51").referring_physician == ""


@pytest.mark.parametrize(("language", "texts"), [
    ("pt-br", ("<h1>Novo pedido</h1>", "Médico solicitante (Sobrenome^Nome)",
               "Data de nascimento do paciente", "Sexo do paciente", "para um paciente novo",
               "Agendar")),
    ("es", ("<h1>Nuevo pedido</h1>", "Médico solicitante (Apellido^Nombre)",
            "Fecha de nacimiento del paciente", "Sexo del paciente", "para un paciente nuevo",
            "Femenino")),
    ("en", ("<h1>New order</h1>", "Referring physician (Family^Given)",
            "Patient birth date", "Patient sex", "for a new patient", "Schedule")),
])
def test_the_form_speaks_portuguese_spanish_and_english(client, tina, language, texts):
    client.force_login(tina)
    html = client.get("/orders/new/", HTTP_ACCEPT_LANGUAGE=language).content.decode()
    for text in texts:
        assert text in html, text


def test_a_refusal_is_shown_in_the_users_language(client, tina, clinic):
    Patient.objects.create(patient_id="SUL-60", name="Outra^Pessoa", clinic=clinic)
    client.force_login(tina)
    client.post("/orders/new/", {**ORDER, "clinic": clinic.pk})
    response = client.post("/orders/new/", {**ORDER, "clinic": clinic.pk,
                                            "patient_id": "SUL-60"},
                           HTTP_ACCEPT_LANGUAGE="es")
    assert response.status_code == 200
    assert "No se pudo programar el pedido" in response.content.decode()


def test_the_form_links_the_order_list_for_staff_who_browse(client, tina, alice):
    client.force_login(alice)
    assert 'href="/orders/"' in client.get("/orders/new/").content.decode()
    client.force_login(tina)  # a technician does not browse: no list to offer
    assert 'href="/orders/"' not in client.get("/orders/new/").content.decode()
