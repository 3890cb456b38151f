"""The staff order list (/orders/): every scheduled procedure the caller may see, with its
status, a completed one linked to its study; filtered by status, date and modality, a
page at a time; one audit entry per page shown. Outsiders see none; patients never see it.

At Clínica Sul, sara is the clinic's admin; maria and jorge are its patients. olga, the
admin of Clínica Norte, must never see them.
"""

from __future__ import annotations

import datetime
from html import unescape

import pytest
from django.test import Client
from django.urls import reverse
from pydicom.uid import generate_uid

from accounts.models import AccessGrant, Role, User
from audit.models import AuditAction, AuditEvent
from imaging.models import Patient
from orders.models import ScheduledProcedure

from .conftest import PAULA, _user, ingest_paths, story_clinic

pytestmark = pytest.mark.django_db

ORDERS = "/orders/"


@pytest.fixture
def sara(clinic) -> User:
    user = _user("sara", Role.ADMIN, is_staff=True)
    user.clinics.add(clinic)
    return user


def _order(patient: Patient, accession: str, *, modality: str = "CT", day: int = 10,
           status: str = ScheduledProcedure.Status.SCHEDULED,
           **extra: object) -> ScheduledProcedure:
    assert patient.clinic_id is not None
    return ScheduledProcedure.objects.create(
        patient=patient, clinic_id=patient.clinic_id, accession_number=accession,
        modality=modality, scheduled_station_ae_title=f"{modality}01",
        scheduled_date=datetime.date(2026, 3, day), scheduled_time=datetime.time(9, 30),
        requested_procedure_description="TC de tórax", referring_physician="Ramos^Paulo",
        status=status, **extra)


@pytest.fixture
def orders(clinic) -> dict[str, Patient]:
    maria = Patient.objects.create(patient_id="SUL-1", name="Souza^Maria", clinic=clinic)
    jorge = Patient.objects.create(patient_id="SUL-2", name="Lima^Jorge", clinic=clinic)
    _order(maria, "A1", priority=ScheduledProcedure.Priority.STAT)
    _order(jorge, "A2", modality="MR", day=11, status=ScheduledProcedure.Status.IN_PROGRESS)
    _order(maria, "A3", day=12, status=ScheduledProcedure.Status.CANCELLED)
    _order(jorge, "A4", day=13, status=ScheduledProcedure.Status.COMPLETED)
    return {"maria": maria, "jorge": jorge}


def _get(client: Client, user: User, language: str = "en", **params: str):
    client.force_login(user)
    return client.get(ORDERS, params, HTTP_ACCEPT_LANGUAGE=language)


def test_a_clinic_admin_sees_her_clinics_orders_with_every_column_and_status(
        client, sara, orders):
    html = _get(client, sara).content.decode()
    for accession in ("A1", "A2", "A3", "A4"):
        assert f"<td data-label=\"Accession\">{accession}</td>" in html
    assert "Souza^Maria" in html and "SUL-1" in html
    assert "TC de tórax" in html and "CT01" in html and "MR01" in html
    assert "Ramos^Paulo" in html and "Stat" in html and "Routine" in html
    for status in ("Scheduled", "In progress", "Cancelled", "Completed"):
        assert status in html
    assert "4 orders found." in html


def test_a_doctor_sees_the_orders_of_the_patients_she_is_granted(client, dora, orders,
                                                                 clinic):
    AccessGrant.objects.create(doctor=dora, patient=orders["jorge"], clinic=clinic)
    html = _get(client, dora).content.decode()
    assert ">A2<" in html and ">A4<" in html
    assert ">A1<" not in html and "Souza^Maria" not in html


def test_the_admin_of_another_clinic_sees_no_orders(client, olga, orders):
    response = _get(client, olga)
    assert response.status_code == 200
    html = response.content.decode()
    assert "No orders." in html and "0 orders found." in html
    assert "Souza^Maria" not in html and "Lima^Jorge" not in html


def test_a_patient_never_sees_the_order_list(client, charlie, paula, orders):
    for patient in (charlie, paula):
        response = _get(client, patient)
        assert response.status_code == 302
        assert response["Location"] == reverse("patients:exams")
    assert not AuditEvent.objects.filter(action=AuditAction.SEARCH).exists()


def test_a_technician_who_does_not_browse_is_sent_to_the_order_form(client, tina, orders):
    response = _get(client, tina)
    assert response.status_code == 302
    assert response["Location"] == reverse("orders:new")


@pytest.mark.parametrize(("params", "expected"), [
    ({"status": "completed"}, {"A4"}),
    ({"status": "in_progress"}, {"A2"}),
    ({"status": "cancelled"}, {"A3"}),
    ({"status": "scheduled"}, {"A1"}),
    ({"modality": "mr"}, {"A2"}),
    ({"date_from": "2026-03-11", "date_to": "2026-03-12"}, {"A2", "A3"}),
    ({"date_to": "2026-03-10"}, {"A1"}),
])
def test_the_list_filters_by_status_scheduled_date_and_modality(client, sara, orders,
                                                                 params, expected):
    html = _get(client, sara, **params).content.decode()
    shown = {a for a in ("A1", "A2", "A3", "A4") if f">{a}<" in html}
    assert shown == expected


@pytest.mark.parametrize(("params", "named"), [
    ({"status": "done"}, "status"),
    ({"date_from": "10/03/2026"}, "date_from"),
    ({"date_from": "2026-03-12", "date_to": "2026-03-11"}, "date_from"),
    ({"modality": "C;T"}, "modality"),
    ({"page": "0"}, "page"),
])
def test_a_parameter_that_cannot_be_used_is_400_naming_it(client, sara, orders, params,
                                                          named):
    response = _get(client, sara, **params)
    assert response.status_code == 400
    assert named in response.content.decode()


def test_pages_of_fifty_with_links_that_keep_the_filters(client, sara, clinic):
    patient = Patient.objects.create(patient_id="MANY", name="Santos^Muitos", clinic=clinic)
    for n in range(55):
        _order(patient, f"M{n:03}", day=1 + n % 28)
    html = unescape(_get(client, sara, status="scheduled").content.decode())
    assert "55 orders found." in html and "Page 1 of 2" in html
    assert 'href="?status=scheduled&page=2" rel="next"' in html
    html = unescape(_get(client, sara, status="scheduled", page="2").content.decode())
    assert html.count('<td data-label="Accession">') == 5
    assert 'href="?status=scheduled" rel="prev"' in html


def test_each_page_shown_is_one_audit_entry_per_patient_listed(client, sara, orders):
    _get(client, sara, modality="MR")
    [entry] = AuditEvent.objects.filter(action=AuditAction.SEARCH)
    assert (entry.username, entry.patient_ref) == ("sara", "SUL-2")
    assert entry.detail == {"list": "orders", "query": {"page": 1, "modality": "MR"},
                            "hits": 1}
    _get(client, sara)
    assert AuditEvent.objects.filter(action=AuditAction.SEARCH).count() == 3


def test_an_empty_page_is_on_the_record_too(client, olga, orders):
    _get(client, olga)
    [entry] = AuditEvent.objects.filter(action=AuditAction.SEARCH)
    assert (entry.username, entry.patient_ref, entry.detail["hits"]) == ("olga", "", 0)


@pytest.mark.parametrize(("language", "texts"), [
    ("pt-br", ("<h1>Pedidos</h1>", "Agendado", "Concluído", "Médico solicitante",
               "4 pedidos encontrados.")),
    ("es", ("<h1>Pedidos</h1>", "Programado", "Completado", "Médico solicitante",
            "4 pedidos encontrados.")),
    ("en", ("<h1>Orders</h1>", "Scheduled", "Completed", "Referring physician",
            "4 orders found.")),
])
def test_the_page_speaks_portuguese_spanish_and_english(client, sara, orders, language,
                                                        texts):
    html = _get(client, sara, language=language).content.decode()
    for text in texts:
        assert text in html, text


def test_the_page_is_in_portuguese_by_default(client, sara, orders):
    client.force_login(sara)
    html = client.get(ORDERS).content.decode()
    assert "<h1>Pedidos</h1>" in html and "Nenhum pedido." not in html


def test_staff_navigation_links_the_list_and_patients_navigation_does_not(
        client, sara, tina, paula):
    client.force_login(sara)
    html = client.get(reverse("imaging:study_list")).content.decode()
    assert f'href="{ORDERS}"' in html
    client.force_login(tina)  # enters orders but does not browse: the form instead
    html = client.get(reverse("imaging:upload")).content.decode()
    assert 'href="/orders/new/"' in html and f'href="{ORDERS}"' not in html
    client.force_login(paula)
    html = client.get(reverse("patients:exams")).content.decode()
    assert "/orders/" not in html


def test_images_arriving_with_the_accession_number_complete_the_order_with_its_study(
        client, sara, ct_study):
    clinic = story_clinic()
    paula = Patient.objects.create(patient_id=PAULA.patient_id, issuer="DEMO",  # as imaged
                                   name=PAULA.name, clinic=clinic)
    order = _order(paula, "ACC-PAULA-1", day=2)
    ingest_paths(ct_study[1][:1])
    order.refresh_from_db()
    assert order.status == ScheduledProcedure.Status.COMPLETED
    html = _get(client, sara, status="completed").content.decode()
    assert ">ACC-PAULA-1<" in html and "Completed" in html
    assert f'href="{reverse("imaging:study_detail", args=[ct_study[0]])}"' in html
    assert "Open study" in html


def test_an_order_in_progress_stays_so_when_its_images_arrive(ct_study):
    paula = Patient.objects.create(patient_id=PAULA.patient_id, issuer="DEMO",
                                   name=PAULA.name, clinic=story_clinic())
    order = _order(paula, "ACC-PAULA-1", day=2, status=ScheduledProcedure.Status.IN_PROGRESS)
    ingest_paths(ct_study[1][:1])
    order.refresh_from_db()
    assert order.study is not None
    assert order.status == ScheduledProcedure.Status.IN_PROGRESS  # its MPPS N-SET says when


@pytest.mark.django_db(transaction=True)
def test_an_order_completed_by_mpps_shows_completed_with_its_study_link(
        portal, client, sara, ct_study):
    from dimse.models import Peer

    from .test_dimse_echo_store import storescu
    from .test_mpps import completed, create, in_progress, mpps_association, update

    clinic = story_clinic()
    Peer.objects.create(ae_title="CT01", host="127.0.0.1", may_store=True, may_query=True,
                        clinic=clinic)
    paula = Patient.objects.create(patient_id=PAULA.patient_id, issuer="DEMO",
                                   name=PAULA.name, clinic=clinic)
    _order(paula, "ACC-PAULA-1", day=2, requested_procedure_id="RP1")
    uid = generate_uid()
    with mpps_association(portal) as assoc:
        assert create(assoc, in_progress(), uid) == 0
        assert ">ACC-PAULA-1<" in _get(client, sara, status="in_progress").content.decode()
        assert update(assoc, completed(), uid)[0] == 0
    assert storescu(portal, str(ct_study[1][0]), aet="CT01").returncode == 0
    html = _get(client, sara, language="pt-br").content.decode()
    assert ">ACC-PAULA-1<" in html and "Concluído" in html
    assert f'href="{reverse("imaging:study_detail", args=[ct_study[0]])}"' in html
    assert "Abrir estudo" in html
