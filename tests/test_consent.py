"""Consent per patient and purpose: given with a text version and channel, revoked (never
deleted), and checked at the moment of use."""

from __future__ import annotations

import datetime

import pytest
from auditlog.models import LogEntry
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from accounts.models import Consent, Purpose
from imaging.models import Patient
from privacy import consent
from privacy.consent import ConsentRequired


@pytest.fixture
def patient(paula) -> Patient:
    return Patient.objects.create(patient_id="PAULA-001", name="Pereira^Paula", user=paula)


def test_a_patient_who_never_consented_has_no_consent_for_any_purpose(patient):
    assert not any(consent.has_consent(patient, purpose) for purpose in Purpose)


def test_giving_consent_records_the_text_version_the_channel_and_who_recorded_it(
    patient, alice
):
    given = consent.give(patient, Purpose.RESEARCH, "2026.1", Consent.Channel.PAPER, alice)
    given.refresh_from_db()
    assert (given.purpose, given.text_version, given.channel) == ("research", "2026.1", "paper")
    assert given.recorded_by == alice
    assert given.given <= timezone.now() and given.revoked is None
    assert consent.has_consent(patient, Purpose.RESEARCH)


def test_consent_for_one_purpose_does_not_cover_another(patient, paula):
    consent.give(patient, Purpose.SHARING, "2026.1", Consent.Channel.PORTAL, paula)
    assert consent.has_consent(patient, Purpose.SHARING)
    assert not consent.has_consent(patient, Purpose.RESEARCH)
    assert not consent.has_consent(patient, Purpose.AUTOMATED)


def test_a_revoked_consent_counts_before_the_revocation_and_not_after(patient, paula):
    given = consent.give(patient, Purpose.SHARING, "2026.1", Consent.Channel.PORTAL, paula)
    Consent.objects.filter(pk=given.pk).update(given=timezone.now() - datetime.timedelta(days=2))
    consent.revoke(given, paula)
    given.refresh_from_db()
    assert given.revoked is not None
    assert not consent.has_consent(patient, Purpose.SHARING)
    assert consent.has_consent(patient, Purpose.SHARING,
                               at=given.revoked - datetime.timedelta(days=1))
    assert not consent.has_consent(patient, Purpose.SHARING,
                                   at=given.given - datetime.timedelta(seconds=1))


def test_revoking_keeps_the_record_and_revoking_again_keeps_the_first_time(patient, paula):
    given = consent.give(patient, Purpose.SHARING, "2026.1", Consent.Channel.PORTAL, paula)
    first = consent.revoke(given, paula).revoked
    again = consent.revoke(given, paula).revoked
    assert first == again
    assert Consent.objects.filter(pk=given.pk).exists()


def test_the_latest_consent_decides_so_consenting_again_after_revoking_counts(patient, paula):
    old = consent.give(patient, Purpose.AUTOMATED, "2025.1", Consent.Channel.PAPER, paula)
    consent.revoke(old, paula)
    new = consent.give(patient, Purpose.AUTOMATED, "2026.1", Consent.Channel.PORTAL, paula)
    assert consent.has_consent(patient, Purpose.AUTOMATED)
    assert consent.require_consent(patient, Purpose.AUTOMATED) == new


def test_require_consent_raises_a_clear_error_naming_the_patient_and_purpose(patient):
    with pytest.raises(ConsentRequired) as raised:
        consent.require_consent(patient, Purpose.SHARING)
    assert raised.value.purpose == "sharing" and raised.value.patient == patient
    assert "sharing" in str(raised.value)
    # a view that lets it through answers 403
    assert isinstance(raised.value, PermissionDenied)


def test_require_consent_refuses_right_after_revocation(patient, paula):
    given = consent.give(patient, Purpose.RESEARCH, "2026.1", Consent.Channel.PORTAL, paula)
    assert consent.require_consent(patient, Purpose.RESEARCH) == given
    consent.revoke(given, paula)
    with pytest.raises(ConsentRequired):
        consent.require_consent(patient, Purpose.RESEARCH)


def test_an_unknown_purpose_or_channel_or_a_missing_text_version_is_refused(patient, paula):
    with pytest.raises(ValueError, match="purpose"):
        consent.give(patient, "marketing", "2026.1", Consent.Channel.PORTAL, paula)
    with pytest.raises(ValueError, match="channel"):
        consent.give(patient, Purpose.SHARING, "2026.1", "carrier pigeon", paula)
    with pytest.raises(ValueError, match="version"):
        consent.give(patient, Purpose.SHARING, "", Consent.Channel.PORTAL, paula)


def test_giving_and_revoking_are_recorded_by_auditlog_with_who_did_it(patient, paula, alice):
    given = consent.give(patient, Purpose.SHARING, "2026.1", Consent.Channel.PORTAL, paula)
    consent.revoke(given, alice)
    entries = LogEntry.objects.get_for_object(given).order_by("timestamp")
    assert [e.action for e in entries] == [LogEntry.Action.CREATE, LogEntry.Action.UPDATE]
    assert [e.actor for e in entries] == [paula, alice]
    assert "revoked" in entries.last().changes_dict


def test_the_admin_revoke_action_sets_revoked_and_deletes_nothing(logged_in, patient, paula):
    active = consent.give(patient, Purpose.SHARING, "2026.1", Consent.Channel.PAPER, paula)
    response = logged_in.post("/admin/accounts/consent/", {
        "action": "revoke_selected", "_selected_action": [active.pk],
    })
    assert response.status_code == 302
    active.refresh_from_db()
    assert active.revoked is not None
    assert Consent.objects.count() == 1


def test_the_admin_offers_no_way_to_delete_a_consent(logged_in, patient, paula):
    given = consent.give(patient, Purpose.SHARING, "2026.1", Consent.Channel.PAPER, paula)
    assert logged_in.get(f"/admin/accounts/consent/{given.pk}/delete/").status_code == 403
    changelist = logged_in.get("/admin/accounts/consent/").content.decode()
    assert "delete_selected" not in changelist


def test_an_admin_records_a_paper_consent_as_given_by_them(logged_in, patient, alice):
    now = timezone.localtime()
    response = logged_in.post("/admin/accounts/consent/add/", {
        "patient": patient.pk, "purpose": "research", "text_version": "2026.1",
        "channel": "paper", "given_0": now.strftime("%Y-%m-%d"),
        "given_1": now.strftime("%H:%M:%S"),
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    recorded = Consent.objects.get()
    assert (recorded.channel, recorded.recorded_by) == ("paper", alice)
    assert consent.has_consent(patient, Purpose.RESEARCH)
