"""Writing a study's report: preliminary, final, amended; never edited in place.

Each save is a new version stored as its own DICOM object through ingest; the version
before it is kept and marked superseded; the study's report status follows. Only doctors
who may see the patient (and superusers) write; everyone else gets a 404 from the editor,
and the attempt is on the trail. A report whose object ingest refuses leaves no row.
"""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import translation
from pydicom.uid import EncapsulatedPDFStorage

from accounts.models import AccessGrant, Role, User
from audit.models import AuditAction, AuditEvent, Outcome
from audit.trail import Actor
from imaging.models import Instance, ReportStatus, Study
from reports import dicom_report, reading, service
from reports.models import Report

from .conftest import PASSWORD

TEXT = service.ReportText("Sem alterações pleuropulmonares.", "Exame normal.")
EDITED = service.ReportText("Nódulo de 4 mm no lobo superior direito.", "Controle em 12 meses.")


@pytest.fixture
def granted(dora: User, clinic, paulas_record) -> User:
    AccessGrant.objects.create(doctor=dora, patient=paulas_record, clinic=clinic)
    return dora


REASON = "Nódulo visto na revisão do exame."


def write(kind: str, user: User, study: Study, text: service.ReportText = TEXT,
          reason: str = REASON) -> Report:
    extra = {"reason": reason} if kind == "amend" else {}
    report: Report = getattr(service, kind)(user, Actor.for_user(user), study, text, **extra)
    return report


def editor_url(study: Study) -> str:
    return reverse("reports:editor", args=[study.study_instance_uid])


def report_entries(study: Study, outcome: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=AuditAction.REPORT, outcome=outcome,
                                          study_uid=study.study_instance_uid))


# --- the versions ------------------------------------------------------------------------


def test_a_preliminary_report_is_stored_as_a_dicom_object_of_the_study(granted, paulas_study):
    report = write("save_preliminary", granted, paulas_study)
    assert (report.version, report.status, report.signed) == (1, "preliminary", None)
    assert report.instance.sop_class_uid == EncapsulatedPDFStorage
    assert report.instance.series.study == paulas_study
    assert report.instance.series.modality == "DOC"
    assert (report.author_name, report.author_professional_id) == ("Dora Lima",
                                                                   "CRM-RS 12345")
    paulas_study.refresh_from_db()
    assert paulas_study.report_status == ReportStatus.PRELIMINARY


def test_saving_a_preliminary_again_is_a_new_version_superseding_the_last(granted,
                                                                          paulas_study):
    first = write("save_preliminary", granted, paulas_study)
    second = write("save_preliminary", granted, paulas_study, EDITED)
    first.refresh_from_db()
    assert second.version == 2 and second.supersedes == first
    assert first.superseded is not None and first.findings == TEXT.findings
    assert first.instance != second.instance
    assert second.instance.series == first.instance.series  # one report series per study
    assert service.current_report(paulas_study) == second


def test_finalizing_signs_a_new_final_version(granted, paulas_study):
    draft = write("save_preliminary", granted, paulas_study)
    final = write("finalize", granted, paulas_study, EDITED)
    draft.refresh_from_db()
    assert (final.status, final.version, final.supersedes) == ("final", 2, draft)
    assert final.signed is not None and not final.amendment
    assert draft.superseded is not None
    paulas_study.refresh_from_db()
    assert paulas_study.report_status == ReportStatus.FINAL


def test_a_final_report_cannot_be_saved_over_nor_finalized_again(granted, paulas_study):
    final = write("finalize", granted, paulas_study)
    for kind in ("save_preliminary", "finalize"):
        with pytest.raises(service.ReportRefused):
            write(kind, granted, paulas_study, EDITED)
    final.refresh_from_db()
    assert final.findings == TEXT.findings and final.superseded is None
    assert Report.objects.filter(study=paulas_study).count() == 1
    paulas_study.refresh_from_db()
    assert paulas_study.report_status == ReportStatus.FINAL


def test_amending_a_final_report_keeps_the_old_one_superseded(granted, paulas_study):
    final = write("finalize", granted, paulas_study)
    amended = write("amend", granted, paulas_study, EDITED)
    final.refresh_from_db()
    assert (amended.status, amended.version, amended.amendment) == ("final", 2, True)
    assert final.superseded is not None and final.superseded_by == amended
    assert final.findings == TEXT.findings  # the old text, as signed
    assert Instance.objects.filter(pk=final.instance.pk).exists()  # its object kept
    assert service.current_report(paulas_study) == amended


def test_an_amendment_says_why_on_the_page_in_the_pdf_and_on_the_trail(granted,
                                                                      paulas_study, client):
    import io

    from pypdf import PdfReader

    write("finalize", granted, paulas_study)
    amended = write("amend", granted, paulas_study, EDITED)
    assert amended.amendment_reason == REASON
    entry = report_entries(paulas_study, Outcome.ALLOWED)[0]
    assert entry.detail["event"] == "amendment"
    assert entry.detail["amendment_reason"] == REASON
    chunks, _ = reading.open_pdf(amended)
    pdf = b"".join(chunks)
    assert REASON in PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    client.force_login(granted)
    page = client.get(editor_url(paulas_study)).content.decode()
    assert page.count(REASON) == 2  # the current version, and the history's row


def test_an_amendment_without_its_reason_is_refused_and_writes_nothing(granted,
                                                                       paulas_study, client):
    final = write("finalize", granted, paulas_study)
    with pytest.raises(service.MissingReason):
        write("amend", granted, paulas_study, EDITED, reason="  ")
    client.force_login(granted)
    response = client.post(editor_url(paulas_study), {
        "action": "amend", "findings": EDITED.findings, "impression": EDITED.impression,
        "reason": ""}, HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 400
    assert "Say why the final report is amended." in response.content.decode()
    assert EDITED.findings in response.content.decode()  # the text is not lost
    assert list(Report.objects.filter(study=paulas_study)) == [final]


def test_only_a_final_report_can_be_amended(granted, paulas_study):
    with pytest.raises(service.ReportRefused):
        write("amend", granted, paulas_study)
    write("save_preliminary", granted, paulas_study)
    with pytest.raises(service.ReportRefused):
        write("amend", granted, paulas_study)


def test_one_current_version_per_study_is_a_database_constraint(granted, paulas_study):
    from django.db import IntegrityError, transaction

    report = write("save_preliminary", granted, paulas_study)
    other = Instance.objects.filter(series__study=paulas_study).exclude(
        pk=report.instance.pk).earliest("pk")
    with pytest.raises(IntegrityError), transaction.atomic():
        Report.objects.create(study=paulas_study, version=2, status="preliminary",
                              author=granted, author_name="x", author_professional_id="x",
                              created=report.created, instance=other)


def test_each_write_is_on_the_trail_with_its_store(granted, paulas_study):
    write("finalize", granted, paulas_study)
    write("amend", granted, paulas_study, EDITED)
    entries = report_entries(paulas_study, Outcome.ALLOWED)
    assert sorted((e.detail["event"], e.detail["version"]) for e in entries) == [
        ("amendment", 2), ("final", 1)]
    assert AuditEvent.objects.filter(action=AuditAction.STORE, detail__via="report",
                                     study_uid=paulas_study.study_instance_uid).count() == 2


def test_an_empty_report_is_refused(granted, paulas_study):
    with pytest.raises(service.ReportRefused):
        write("save_preliminary", granted, paulas_study, service.ReportText(" ", "\n"))
    assert not Report.objects.exists()


def test_a_doctor_without_crm_is_told_to_fill_it_in(granted, paulas_study, client):
    User.objects.filter(pk=granted.pk).update(professional_id="")
    granted.refresh_from_db()
    with pytest.raises(service.ReportRefused, match="CRM"):
        write("save_preliminary", granted, paulas_study)
    client.force_login(granted)
    page = client.get(editor_url(paulas_study), HTTP_ACCEPT_LANGUAGE="en")
    assert page.status_code == 200
    assert b'id="missing-signature"' in page.content
    assert reverse("accounts:profile").encode() in page.content
    assert b'id="report-form"' not in page.content


def test_the_doctor_fills_in_her_crm_on_her_profile(granted, client):
    client.force_login(granted)
    response = client.post(reverse("accounts:profile"), {
        "first_name": "Dora", "last_name": "Lima", "professional_id": "CRM-RS 54321"})
    assert response.status_code == 302
    granted.refresh_from_db()
    assert granted.professional_id == "CRM-RS 54321"


# --- a failed ingest ---------------------------------------------------------------------


def test_a_report_whose_object_ingest_refuses_leaves_no_row(granted, paulas_study,
                                                            monkeypatch, dicom_storage):
    # The object's new UID collides with an image already stored: ingest keeps the
    # original and refuses ours (a conflict).
    taken = Instance.objects.filter(series__study=paulas_study).earliest("pk").sop_instance_uid
    monkeypatch.setattr(dicom_report, "generate_uid", lambda: taken)
    files_before = sorted(p for p in dicom_storage.rglob("*") if p.is_file())
    with pytest.raises(service.ReportNotStored):
        write("finalize", granted, paulas_study)
    assert not Report.objects.exists()
    paulas_study.refresh_from_db()
    assert paulas_study.report_status == ReportStatus.NONE
    assert sorted(p for p in dicom_storage.rglob("*") if p.is_file()) == files_before
    assert [e.detail["event"] for e in report_entries(paulas_study, Outcome.FAILED)] == [
        "final"]


def test_a_failure_after_ingest_takes_the_stored_object_back(granted, paulas_study,
                                                             monkeypatch, dicom_storage):
    def fail(*args, **kwargs):
        raise RuntimeError("the trail could not be written")

    files_before = sorted(p for p in dicom_storage.rglob("*") if p.is_file())
    instances_before = Instance.objects.count()
    monkeypatch.setattr(service, "_detail", fail)
    with pytest.raises(RuntimeError):
        write("finalize", granted, paulas_study)
    assert not Report.objects.exists()
    assert Instance.objects.count() == instances_before
    assert sorted(p for p in dicom_storage.rglob("*") if p.is_file()) == files_before


# --- who may write -----------------------------------------------------------------------


def test_a_superuser_with_a_crm_may_write(alice, paulas_study):
    User.objects.filter(pk=alice.pk).update(first_name="Alice", last_name="Souza",
                                            professional_id="CRM-RS 1")
    alice.refresh_from_db()
    report = write("finalize", alice, paulas_study)
    assert report.author == alice
    assert report_entries(paulas_study, Outcome.ALLOWED)[0].detail["platform_wide"] is True


@pytest.mark.parametrize("who", ["dora_without_grant", "tina", "olga", "clinic_admin",
                                 "paula"])
def test_who_may_not_write_is_refused_and_recorded(who, request, paulas_study, clinic):
    if who == "dora_without_grant":
        user = request.getfixturevalue("dora")
    elif who == "clinic_admin":
        user = User.objects.create_user("ana", password=PASSWORD, role=Role.ADMIN,
                                        is_staff=True, first_name="Ana", last_name="Admin",
                                        professional_id="CRM-RS 9")
        user.clinics.add(clinic)
    else:
        user = request.getfixturevalue(who)
    with pytest.raises(service.NotAllowed):
        write("finalize", user, paulas_study)
    assert not Report.objects.exists()
    assert [e.username for e in report_entries(paulas_study, Outcome.DENIED)] == [
        user.username]


def test_a_break_the_glass_access_does_not_let_a_doctor_write(dora, paulas_record,
                                                              paulas_study):
    from imaging.access import break_the_glass

    break_the_glass(dora, Actor.for_user(dora), paulas_record,
                    "paciente inconsciente no pronto-socorro")
    with pytest.raises(service.NotAllowed):
        write("finalize", dora, paulas_study)


# --- the editor page ---------------------------------------------------------------------


def test_the_editor_shows_the_signature_line_and_saves_finalizes_amends(granted,
                                                                        paulas_study, client):
    client.force_login(granted)
    page = client.get(editor_url(paulas_study), HTTP_ACCEPT_LANGUAGE="en")
    assert page.status_code == 200
    assert "Dora Lima — CRM-RS 12345" in page.content.decode()
    assert b'name="findings"' in page.content and b'name="impression"' in page.content
    assert b"csrfmiddlewaretoken" in page.content

    for action, text in (("save", TEXT), ("finalize", TEXT), ("amend", EDITED)):
        response = client.post(editor_url(paulas_study), {
            "action": action, "findings": text.findings, "impression": text.impression,
            "reason": REASON})
        assert response.status_code == 302, action
    assert [(r.version, r.status, r.superseded is None) for r in
            Report.objects.filter(study=paulas_study).order_by("version")] == [
        (1, "preliminary", False), (2, "final", False), (3, "final", True)]
    page = client.get(editor_url(paulas_study), HTTP_ACCEPT_LANGUAGE="en")
    assert EDITED.findings in page.content.decode()
    assert b'value="amend"' in page.content and b'value="finalize"' not in page.content
    assert page.content.count(b'class="superseded"') == 2


def test_the_editor_refuses_to_save_over_a_final_report(granted, paulas_study, client):
    write("finalize", granted, paulas_study)
    client.force_login(granted)
    response = client.post(editor_url(paulas_study), {
        "action": "save", "findings": "outra coisa", "impression": ""},
        HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 409
    assert b'id="problem"' in response.content
    assert Report.objects.get(study=paulas_study).findings == TEXT.findings


def test_the_editor_checks_csrf(granted, paulas_study):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(granted)
    response = client.post(editor_url(paulas_study), {
        "action": "save", "findings": "x", "impression": "y"})
    assert response.status_code == 403
    assert not Report.objects.exists()


@pytest.mark.parametrize("who", ["charlie", "tina", "olga", "dora"])
def test_outsiders_get_404_from_the_editor_and_the_attempt_is_recorded(who, request,
                                                                      paulas_study, client):
    user = request.getfixturevalue(who)  # dora without a grant
    client.force_login(user)
    assert client.get(editor_url(paulas_study)).status_code == 404
    assert client.post(editor_url(paulas_study), {
        "action": "finalize", "findings": "x", "impression": "y"}).status_code == 404
    assert not Report.objects.exists()
    denied = report_entries(paulas_study, Outcome.DENIED)
    assert [e.username for e in denied] == [user.username, user.username]


def test_an_unknown_study_is_a_404_on_the_record(granted, client):
    client.force_login(granted)
    assert client.get(reverse("reports:editor", args=["1.2.3.999"])).status_code == 404
    assert AuditEvent.objects.filter(object_uid="1.2.3.999", outcome=Outcome.FAILED).exists()


def test_the_staff_pdf_download_goes_through_the_policy(granted, paulas_study, client,
                                                        olga):
    draft = write("save_preliminary", granted, paulas_study)
    client.force_login(granted)
    response = client.get(reverse("reports:pdf", args=[draft.pk]))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert b"".join(response.streaming_content).startswith(b"%PDF-")
    assert AuditEvent.objects.filter(action=AuditAction.DOWNLOAD, outcome=Outcome.ALLOWED,
                                     detail__report=draft.pk).exists()
    client.force_login(olga)
    assert client.get(reverse("reports:pdf", args=[draft.pk])).status_code == 404
    assert AuditEvent.objects.filter(action=AuditAction.DOWNLOAD, outcome=Outcome.DENIED,
                                     username="olga").exists()


def test_a_reader_who_may_not_write_sees_only_the_current_final_version(
        granted, paulas_study, clinic, client):
    reader = User.objects.create_user("ana", password=PASSWORD, role=Role.ADMIN,
                                      is_staff=True)
    reader.clinics.add(clinic)
    draft = write("save_preliminary", granted, paulas_study)
    client.force_login(reader)
    assert client.get(reverse("reports:pdf", args=[draft.pk])).status_code == 404
    final = write("finalize", granted, paulas_study)
    assert client.get(reverse("reports:pdf", args=[final.pk])).status_code == 200
    assert client.get(reverse("reports:pdf", args=[draft.pk])).status_code == 404


def test_the_study_page_snippet_shows_drafts_only_to_those_who_write(granted, paulas_study,
                                                                    clinic, rf):
    from django.template import engines

    reader = User.objects.create_user("ana", password=PASSWORD, role=Role.ADMIN,
                                      is_staff=True)
    reader.clinics.add(clinic)
    write("save_preliminary", granted, paulas_study)
    snippet = engines["django"].from_string("{% load report_tags %}{% study_report study %}")

    def shown_to(user: User) -> str:
        request = rf.get("/")
        request.user = user
        with translation.override("en"):
            return snippet.render({"study": paulas_study, "request": request}, request)

    assert TEXT.findings in shown_to(granted)
    assert editor_url(paulas_study) in shown_to(granted)
    assert TEXT.findings not in shown_to(reader)
    assert "No report yet." in shown_to(reader)
    write("finalize", granted, paulas_study, EDITED)
    assert EDITED.findings in shown_to(reader)
    assert editor_url(paulas_study) not in shown_to(reader)
