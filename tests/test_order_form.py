"""Staff of a clinic without an EHR feed enter an order by hand; outsiders get 404."""

from __future__ import annotations

import datetime

import pytest

from accounts.models import Clinic
from orders.models import ScheduledProcedure

pytestmark = pytest.mark.django_db

ORDER = {"patient_id": "SUL-50", "patient_name": "Souza^Ana", "accession_number": "M50",
         "modality": "CT", "station": "CT01", "scheduled": "2026-03-10 14:30",
         "description": "TC de tórax", "priority": "ROUTINE"}


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
