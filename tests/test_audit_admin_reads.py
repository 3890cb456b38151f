"""Reading patient data in Django admin is on the trail, with no exception for admins: a
list page is one entry per patient shown, a change or history page one entry."""

from __future__ import annotations

from accounts.models import Consent, Purpose
from audit.models import AuditAction, AuditEvent
from imaging.models import Instance
from privacy import consent as consents


def _admin_reads(action: AuditAction) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action, detail__has_key="admin")
                .order_by("seq"))


def test_a_study_list_in_admin_is_one_entry_per_patient_shown(
        client, alice, paulas_study, charlies_study):
    client.force_login(alice)
    assert client.get("/admin/imaging/study/").status_code == 200
    entries = _admin_reads(AuditAction.SEARCH)
    assert {e.patient_pk for e in entries} == {paulas_study.patient_id,
                                               charlies_study.patient_id}
    assert all(e.username == "alice" and e.detail["admin"] == "imaging.study"
               for e in entries)


def test_an_instance_page_in_admin_with_its_metadata_is_recorded(client, alice,
                                                                   paulas_study):
    instance = Instance.objects.filter(series__study=paulas_study).first()
    assert instance is not None
    client.force_login(alice)
    assert client.get(f"/admin/imaging/instance/{instance.pk}/change/").status_code == 200
    (entry,) = _admin_reads(AuditAction.VIEW)
    assert (entry.level, entry.object_uid, entry.patient_pk) == (
        "instance", instance.sop_instance_uid, paulas_study.patient_id)


def test_patient_series_and_history_pages_in_admin_are_recorded(client, alice, paulas_study):
    series = paulas_study.series.first()
    client.force_login(alice)
    assert client.get(f"/admin/imaging/patient/{paulas_study.patient_id}/change/"
                      ).status_code == 200
    assert client.get(f"/admin/imaging/patient/{paulas_study.patient_id}/history/"
                      ).status_code == 200
    assert client.get(f"/admin/imaging/series/{series.pk}/change/").status_code == 200
    assert client.get("/admin/imaging/instance/").status_code == 200
    views = [(e.level, e.detail["page"]) for e in _admin_reads(AuditAction.VIEW)]
    assert views == [("patient", "change"), ("patient", "history"), ("series", "change")]
    (listed,) = _admin_reads(AuditAction.SEARCH)
    assert listed.patient_pk == paulas_study.patient_id and listed.detail["hits"] == 12


def test_privacy_records_in_admin_are_recorded_against_the_patient(client, alice, paula,
                                                                    paulas_study):
    consent = consents.give(paulas_study.patient, Purpose.SHARING,
                            consents.CURRENT_TEXT_VERSION, Consent.Channel.PORTAL, paula)
    client.force_login(alice)
    assert client.get(f"/admin/accounts/consent/{consent.pk}/change/").status_code == 200
    (entry,) = _admin_reads(AuditAction.VIEW)
    assert entry.patient_pk == paulas_study.patient_id


def test_the_patient_sees_that_an_admin_opened_her_record(client, alice, paula, paulas_study):
    client.force_login(alice)
    client.get(f"/admin/imaging/study/{paulas_study.pk}/change/")
    client.force_login(paula)
    page = client.get("/audit/my-access/").content.decode()
    assert "alice" in page and paulas_study.study_instance_uid in page


def test_an_empty_admin_list_is_still_one_entry(client, alice, db):
    client.force_login(alice)
    assert client.get("/admin/imaging/study/").status_code == 200
    (entry,) = _admin_reads(AuditAction.SEARCH)
    assert entry.detail["hits"] == 0
