"""The access policy: who sees which patient, and every attempt on the record.

alice is the clinic admin, dora a doctor at Clínica Sul, tina a technician, paula a patient
with her own exams, charlie a patient who must never see paula's.
"""

from __future__ import annotations

import datetime

import pytest
from django.http import Http404
from django.utils import timezone

from accounts.models import AccessGrant, BreakGlassAccess, Clinic
from audit.models import AuditAction, AuditEvent
from audit.trail import Actor
from imaging import access, policies
from imaging.models import Patient, Study


@pytest.fixture
def clinic(db) -> Clinic:
    return Clinic.objects.get_or_create(name="Clínica Sul")[0]


@pytest.fixture
def paula_record(paula, clinic) -> Patient:
    return Patient.objects.create(patient_id="PAULA-001", name="Pereira^Paula", user=paula,
                                  clinic=clinic)


@pytest.fixture
def paula_study(paula_record) -> Study:
    return Study.objects.create(study_instance_uid="1.2.826.0.1.3680043.10.1455.1",
                                patient=paula_record, study_date=datetime.date(2026, 3, 2))


def _grant(doctor, patient, clinic, **kw) -> AccessGrant:
    return AccessGrant.objects.create(doctor=doctor, patient=patient, clinic=clinic, **kw)


def test_admins_see_every_patient(alice, paula_record):
    assert policies.decide(alice, AuditAction.VIEW, paula_record)
    assert list(policies.visible_patients(alice)) == [paula_record]


def test_patients_see_only_their_own_records(paula, charlie, paula_record):
    assert policies.decide(paula, AuditAction.VIEW, paula_record)
    assert not policies.decide(charlie, AuditAction.VIEW, paula_record)
    assert list(policies.visible_patients(charlie)) == []


def test_technicians_ingest_but_do_not_browse(tina, paula_record):
    assert policies.decide(tina, policies.Action.STORE)
    assert not policies.decide(tina, AuditAction.VIEW, paula_record)
    assert list(policies.visible_studies(tina)) == []


def test_a_doctor_without_a_grant_sees_nothing(dora, paula_record):
    assert not policies.decide(dora, AuditAction.VIEW, paula_record)
    assert list(policies.visible_patients(dora)) == []


def test_a_doctor_with_a_care_relationship_at_her_clinic_sees_the_patient(
    dora, clinic, paula_record
):
    dora.clinics.add(clinic)
    _grant(dora, paula_record, clinic)
    assert policies.decide(dora, AuditAction.VIEW, paula_record)
    assert list(policies.visible_patients(dora)) == [paula_record]


def test_a_grant_at_a_clinic_the_doctor_left_gives_nothing(dora, clinic, paula_record):
    dora.clinics.remove(clinic)
    _grant(dora, paula_record, clinic)  # dora is not a member of the clinic
    assert not policies.decide(dora, AuditAction.VIEW, paula_record)
    assert list(policies.visible_patients(dora)) == []


def test_an_expired_grant_gives_nothing(dora, clinic, paula_record):
    dora.clinics.add(clinic)
    _grant(dora, paula_record, clinic, kind=AccessGrant.Kind.GRANT,
           ends=timezone.now() - datetime.timedelta(minutes=1))
    assert not policies.decide(dora, AuditAction.VIEW, paula_record)
    assert list(policies.visible_patients(dora)) == []


def test_breaking_the_glass_needs_a_written_reason(dora, paula_record):
    with pytest.raises(access.BreakGlassRefused, match="reason"):
        access.break_the_glass(dora, Actor.for_user(dora), paula_record, "urgent")
    assert not BreakGlassAccess.objects.exists()


def test_breaking_the_glass_allows_reading_marks_it_and_lists_it_for_review(
    dora, paula_record
):
    reason = "Paciente inconsciente no pronto-socorro, preciso da TC anterior"
    access.break_the_glass(dora, Actor.for_user(dora), paula_record, reason)
    decision = policies.decide(dora, AuditAction.VIEW, paula_record)
    assert decision.allowed and decision.break_glass
    assert not policies.decide(dora, AuditAction.SHARE, paula_record)
    assert BreakGlassAccess.objects.get().reviewed is None  # waiting for the admin
    entry = AuditEvent.objects.get(action=AuditAction.BREAK_GLASS)
    assert entry.break_glass and entry.reason == reason and entry.patient_pk == paula_record.pk


def test_break_the_glass_expires(dora, paula_record):
    access.break_the_glass(dora, Actor.for_user(dora), paula_record,
                           "Atendimento de emergência sem médico assistente")
    BreakGlassAccess.objects.update(expires=timezone.now() - datetime.timedelta(seconds=1))
    assert not policies.decide(dora, AuditAction.VIEW, paula_record)


def test_patients_and_technicians_cannot_break_the_glass(charlie, tina, paula_record):
    for user in (charlie, tina):
        with pytest.raises(access.BreakGlassRefused):
            access.break_the_glass(user, Actor.for_user(user), paula_record,
                                   "I would like to see this record please")
    assert not BreakGlassAccess.objects.exists()


def test_charlie_asking_for_paulas_study_uid_gets_404_and_the_attempt_is_logged(
    charlie, paula_study
):
    with pytest.raises(Http404):
        access.get_or_404(charlie, Actor.for_user(charlie), AuditAction.VIEW, "study",
                          paula_study.study_instance_uid)
    entry = AuditEvent.objects.get()
    assert (entry.username, entry.outcome, entry.study_uid) == (
        "charlie", "denied", paula_study.study_instance_uid)


def test_an_unknown_uid_looks_the_same_as_a_forbidden_one_and_is_logged(charlie):
    with pytest.raises(Http404):
        access.get_or_404(charlie, Actor.for_user(charlie), AuditAction.VIEW, "study", "1.2.3")
    assert AuditEvent.objects.get().outcome == "failed"


def test_paula_opening_her_study_is_allowed_and_logged(paula, paula_study):
    found = access.get_or_404(paula, Actor.for_user(paula), AuditAction.VIEW, "study",
                              paula_study.study_instance_uid)
    assert found == paula_study
    assert AuditEvent.objects.get().outcome == "allowed"


def test_a_search_is_logged_once_per_patient_found(alice, paula_study):
    access.record_search(Actor.for_user(alice), [paula_study], query={"PatientID": "PAULA*"})
    entry = AuditEvent.objects.get()
    assert entry.action == "search" and entry.patient_pk == paula_study.patient_id
    assert entry.detail == {"query": {"PatientID": "PAULA*"}, "hits": 1}


def test_inactive_users_see_nothing(paula, paula_record):
    paula.is_active = False
    paula.save()
    assert not policies.decide(paula, AuditAction.VIEW, paula_record)


def test_the_emergency_page_opens_access_with_a_reason_and_shows_the_patient(client, dora,
                                                                           paula_study):
    client.force_login(dora)
    assert "Pereira^Paula" not in client.get("/imaging/?q=PAULA-001").content.decode()
    refused = client.post("/imaging/emergency/", {"patient_id": "PAULA-001", "reason": "x"})
    assert refused.status_code == 200 and not BreakGlassAccess.objects.exists()
    response = client.post("/imaging/emergency/", {
        "patient_id": "PAULA-001",
        "reason": "Paciente em parada no pronto-socorro, sem médico assistente",
    }, follow=True)
    assert "Pereira^Paula" in response.content.decode()
    assert AuditEvent.objects.filter(action="break_glass", break_glass=True).count() == 1


def test_the_emergency_page_is_only_for_doctors(client, paula, tina):
    for user in (paula, tina):
        client.force_login(user)
        assert client.get("/imaging/emergency/").status_code == 403


def test_a_doctors_decision_is_one_query_by_grant_by_break_the_glass_or_refused(
        dora, clinic, paula_record, django_assert_num_queries):
    dora.clinics.add(clinic)
    with django_assert_num_queries(1):
        assert not policies.decide(dora, AuditAction.VIEW, paula_record)
    BreakGlassAccess.objects.create(doctor=dora, patient=paula_record, reason="x" * 20,
                                    opened=timezone.now(),
                                    expires=timezone.now() + datetime.timedelta(hours=1))
    with django_assert_num_queries(1):
        assert policies.decide(dora, AuditAction.VIEW, paula_record).break_glass
    _grant(dora, paula_record, clinic)
    with django_assert_num_queries(1):
        decision = policies.decide(dora, AuditAction.VIEW, paula_record)
    assert decision.allowed and not decision.break_glass
