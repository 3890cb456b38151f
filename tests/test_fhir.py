"""FHIR (read-only, /fhir/): ImagingStudy, Patient and final DiagnosticReports, found and read
over real HTTP and parsed back with fhir.resources' models, behind DICOMweb's authentication,
access policy and audit.

paula has a CT study (2 series of 6, 2026-03-02, ACC-PAULA-1) and charlie an MR study (1
series of 4, 2025-11-20, ACC-CHARLIE-1), both at the story clinic. alice (superuser) sees
both; dora (doctor) sees paula's only with a grant; each patient sees only her own records;
the anonymous get a 401; whatever is not visible is a 404, exactly like what does not exist.
"""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest
import requests
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient as FhirPatient
from pydicom.uid import CTImageStorage

from accounts.models import AccessGrant, ApiToken, User
from audit.models import AuditAction, AuditEvent, Outcome
from audit.trail import Actor
from imaging.models import Patient, Study
from reports import service
from tests.conftest import PASSWORD

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = pytest.mark.django_db(transaction=True)

FHIR_JSON = "application/fhir+json"
TEXT = service.ReportText("Sem alterações pleuropulmonares.", "Exame normal.")


@pytest.fixture
def archive(alice, paulas_study, charlies_study) -> dict[str, Study]:
    return {"paula": paulas_study, "charlie": charlies_study}


@pytest.fixture
def granted(dora, clinic, paulas_record):
    AccessGrant.objects.create(doctor=dora, patient=paulas_record, clinic=clinic)
    return dora


def get(live_server, path: str, user: str | None = "alice", **kwargs: Any) -> requests.Response:
    auth = (user, PASSWORD) if user else None
    return requests.get(f"{live_server.url}/fhir/{path}", auth=auth, timeout=30, **kwargs)


def parsed(model: type[Any], response: requests.Response) -> Any:
    """The response's resource, validated by its fhir.resources model."""
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith(FHIR_JSON)
    return model.model_validate_json(response.content)


def bundle(response: requests.Response) -> Any:
    found = parsed(Bundle, response)
    assert found.type == "searchset"
    return found


def resources(found: Any) -> list[Any]:
    return [entry.resource for entry in found.entry or []]


def study_uids(response: requests.Response) -> set[str]:
    found = resources(bundle(response))
    assert all(isinstance(r, ImagingStudy) for r in found)
    return {r.id for r in found}


def outcome(response: requests.Response, status: int) -> Any:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith(FHIR_JSON)
    found = OperationOutcome.model_validate_json(response.content)
    assert found.issue[0].severity == "error"
    return found


def link(found: Any, relation: str) -> Any:
    return next((str(link.url) for link in found.link or [] if link.relation == relation),
                None)


# --- capabilities, authentication, formats ------------------------------------------------


def test_the_capability_statement_is_public_and_lists_what_is_served(live_server, db):
    response = get(live_server, "metadata", user=None)
    assert response.status_code == 200
    statement = parsed(CapabilityStatement, response)
    served = {r.type: r for r in statement.rest[0].resource}
    assert set(served) == {"ImagingStudy", "Patient", "DiagnosticReport"}
    assert {p.name for p in served["ImagingStudy"].searchParam} >= {
        "patient", "identifier", "date", "modality"}
    assert {i.code for i in served["Patient"].interaction} == {"read", "search-type"}


def test_the_anonymous_get_a_401_operation_outcome_and_a_challenge(live_server, archive):
    for path in ("ImagingStudy", f"ImagingStudy/{archive['paula'].study_instance_uid}",
                 "Patient", "DiagnosticReport"):
        response = get(live_server, path, user=None)
        outcome(response, 401)
        assert "Basic" in response.headers["WWW-Authenticate"]


def test_a_wrong_password_is_a_401(live_server, archive):
    response = requests.get(f"{live_server.url}/fhir/ImagingStudy", auth=("alice", "nope"),
                            timeout=30)
    outcome(response, 401)


def test_a_bearer_token_finds_its_users_records(live_server, archive, paula):
    _token, secret = ApiToken.issue(paula, "health app")
    response = requests.get(f"{live_server.url}/fhir/ImagingStudy", timeout=30,
                            headers={"Authorization": f"Bearer {secret}"})
    assert study_uids(response) == {archive["paula"].study_instance_uid}


def test_the_portal_session_works_too(live_server, archive, paula):
    from django.test import Client

    client = Client()
    client.force_login(paula)
    response = requests.get(f"{live_server.url}/fhir/Patient", timeout=30,
                            cookies={"sessionid": client.cookies["sessionid"].value})
    assert [p.identifier[0].value for p in resources(bundle(response))] == ["PAULA-001"]


def test_json_is_served_for_format_json_and_xml_is_refused(live_server, archive):
    html = get(live_server, "ImagingStudy?_format=json", headers={"Accept": "text/html"})
    assert len(study_uids(html)) == 2
    assert len(study_uids(get(live_server, "ImagingStudy",
                              headers={"Accept": "application/fhir+json"}))) == 2
    outcome(get(live_server, "ImagingStudy", headers={"Accept": "application/fhir+xml"}), 406)
    outcome(get(live_server, "ImagingStudy?_format=xml"), 406)


def test_the_api_is_read_only(live_server, archive):
    response = requests.post(f"{live_server.url}/fhir/ImagingStudy", json={},
                             auth=("alice", PASSWORD), timeout=30)
    outcome(response, 405)


def test_an_unknown_resource_type_is_a_404(live_server, archive):
    outcome(get(live_server, "Observation"), 404)
    outcome(get(live_server, "Observation/1"), 404)


# --- ImagingStudy --------------------------------------------------------------------------


def test_an_imaging_study_has_its_series_instances_and_dicomweb_endpoint(live_server, archive):
    paula = archive["paula"]
    response = get(live_server, f"ImagingStudy/{paula.study_instance_uid}")
    assert response.status_code == 200
    study = parsed(ImagingStudy, response)
    assert study.id == paula.study_instance_uid
    assert study.status == "available"
    assert study.subject.reference == f"Patient/{paula.patient_id}"
    assert str(study.started).startswith("2026-03-02")
    assert (study.numberOfSeries, study.numberOfInstances) == (2, 12)
    assert [c.code for c in study.modality] == ["CT"]
    assert {i.system: i.value for i in study.identifier if i.system} == {
        "urn:dicom:uid": f"urn:oid:{paula.study_instance_uid}"}
    assert "ACC-PAULA-1" in {i.value for i in study.identifier}
    stored = {s.series_instance_uid: s for s in paula.series.all()}
    assert {s.uid for s in study.series} == set(stored)
    for series in study.series:
        assert series.modality.code == "CT"
        assert series.modality.system == "http://dicom.nema.org/resources/ontology/DCM"
        assert series.numberOfInstances == 6 == len(series.instance)
        assert series.number == stored[series.uid].series_number
        assert {i.uid for i in series.instance} == set(
            stored[series.uid].instances.values_list("sop_instance_uid", flat=True))
        assert {i.sopClass.code for i in series.instance} == {f"urn:oid:{CTImageStorage}"}
    (endpoint,) = study.contained
    assert study.endpoint[0].reference == f"#{endpoint.id}"
    assert endpoint.connectionType.code == "dicom-wado-rs"
    assert endpoint.address == f"{live_server.url}/dicomweb"
    # The address is DICOMweb's base: the study is there, for the same caller.
    wado = requests.get(f"{endpoint.address}/studies/{study.id}/metadata", timeout=30,
                        auth=("alice", PASSWORD))
    assert wado.status_code == 200


def test_a_search_returns_a_searchset_of_imaging_studies(live_server, archive):
    parsed = bundle(get(live_server, "ImagingStudy"))
    assert parsed.total == 2
    assert {e.fullUrl for e in parsed.entry} == {
        f"{live_server.url}/fhir/ImagingStudy/{s.study_instance_uid}" for s in archive.values()}
    assert link(parsed, "self").startswith(f"{live_server.url}/fhir/ImagingStudy?")
    assert link(parsed, "next") is None


@pytest.mark.parametrize("query", [
    "patient.identifier=PAULA-001",
    "subject:Patient.identifier=PAULA-001",
    "patient.identifier=|PAULA-001",
    "patient.identifier=NOBODY,PAULA-001",
])
def test_imaging_studies_by_patient_identifier(live_server, archive, query):
    assert study_uids(get(live_server, f"ImagingStudy?{query}")) == {
        archive["paula"].study_instance_uid}


def test_imaging_studies_by_patient_reference(live_server, archive):
    paula = archive["paula"]
    for query in (f"patient={paula.patient_id}", f"patient=Patient/{paula.patient_id}",
                  f"subject=Patient/{paula.patient_id}",
                  f"subject={live_server.url}/fhir/Patient/{paula.patient_id}"):
        assert study_uids(get(live_server, f"ImagingStudy?{query}")) == {
            paula.study_instance_uid}, query
    assert study_uids(get(live_server, f"ImagingStudy?subject=Group/{paula.patient_id}")) == set()


def test_an_issuer_that_is_not_the_patients_matches_nothing(live_server, archive):
    response = get(live_server, "ImagingStudy?patient.identifier=urn:oid:1.2.3|PAULA-001")
    assert study_uids(response) == set()


def test_an_issuer_given_as_an_oid_is_the_identifier_system(live_server, archive):
    Patient.objects.filter(patient_id="PAULA-001").update(issuer="2.16.840.1.113883.3.1")
    paula = archive["paula"]
    found = get(live_server, "ImagingStudy?patient.identifier="
                "urn:oid:2.16.840.1.113883.3.1|PAULA-001")
    assert study_uids(found) == {paula.study_instance_uid}
    patient = parsed(FhirPatient, get(live_server, f"Patient/{paula.patient_id}"))
    assert patient.identifier[0].system == "urn:oid:2.16.840.1.113883.3.1"


def test_imaging_studies_by_identifier(live_server, archive):
    uid = archive["paula"].study_instance_uid
    for query in (f"urn:dicom:uid|urn:oid:{uid}", f"urn:oid:{uid}", uid, "ACC-PAULA-1",
                  "|ACC-PAULA-1", "ACC-X,ACC-PAULA-1"):
        assert study_uids(get(live_server, f"ImagingStudy?identifier={query}")) == {uid}, query
    for query in (f"urn:other|urn:oid:{uid}", "urn:dicom:uid|ACC-PAULA-1", "ACC-PAULA"):
        assert study_uids(get(live_server, f"ImagingStudy?identifier={query}")) == set(), query


@pytest.mark.parametrize(("query", "expected"), [
    ("date=2026-03-02", {"paula"}),
    ("date=eq2026-03-02", {"paula"}),
    ("date=2026-03", {"paula"}),
    ("date=2026", {"paula"}),
    ("date=2026-03-03", set()),
    ("date=ge2026-03-02", {"paula"}),
    ("date=gt2026-03-02", set()),
    ("date=gt2026-03-01", {"paula"}),
    ("date=gt2025-11", {"paula"}),
    ("date=lt2026-03-02", {"charlie"}),
    ("date=le2026-03-02", {"paula", "charlie"}),
    ("date=le2025-11", {"charlie"}),
    ("date=ne2026-03-02", {"charlie"}),
    ("date=ge2025-11-01&date=lt2025-12-01", {"charlie"}),
    ("date=ge2025-01-01&date=le2026-12-31", {"paula", "charlie"}),
    ("date=2025-11-20,2026-03-02", {"paula", "charlie"}),
])
def test_imaging_studies_by_date_with_prefixes(live_server, archive, query, expected):
    assert study_uids(get(live_server, f"ImagingStudy?{query}")) == {
        archive[name].study_instance_uid for name in expected}


@pytest.mark.parametrize("value", ["2026-13-01", "2026-02-30", "yesterday", "20260302",
                                   "xx2026-03-02", "2026-03-02T10:00:00Z"])
def test_a_bad_date_is_a_400(live_server, archive, value):
    issue = outcome(get(live_server, "ImagingStudy", params={"date": value}), 400).issue[0]
    assert issue.code == "invalid"
    assert issue.diagnostics


@pytest.mark.parametrize(("query", "expected"), [
    ("CT", {"paula"}),
    ("MR", {"charlie"}),
    ("http://dicom.nema.org/resources/ontology/DCM|MR", {"charlie"}),
    ("CT,MR", {"paula", "charlie"}),
    ("US", set()),
    ("http://example.org/other|CT", set()),
])
def test_imaging_studies_by_modality(live_server, archive, query, expected):
    assert study_uids(get(live_server, "ImagingStudy", params={"modality": query})) == {
        archive[name].study_instance_uid for name in expected}


def test_imaging_studies_by_id_and_a_head_request(live_server, archive):
    uid = archive["charlie"].study_instance_uid
    assert study_uids(get(live_server, f"ImagingStudy?_id={uid}")) == {uid}
    head = requests.head(f"{live_server.url}/fhir/ImagingStudy/{uid}",
                         auth=("alice", PASSWORD), timeout=30)
    assert (head.status_code, head.content) == (200, b"")


def test_search_parameters_combine(live_server, archive):
    assert study_uids(get(live_server, "ImagingStudy?modality=CT&date=2026")) == {
        archive["paula"].study_instance_uid}
    assert study_uids(get(live_server, "ImagingStudy?modality=MR&date=2026")) == set()


def test_pages_follow_next_links_to_the_end(live_server, archive):
    first = bundle(get(live_server, "ImagingStudy?_count=1&modality=CT,MR"))
    assert first.total == 2 and len(first.entry) == 1
    assert "modality=CT%2CMR" in link(first, "self")
    assert link(first, "previous") is None
    second = bundle(requests.get(link(first, "next"), auth=("alice", PASSWORD), timeout=30))
    assert second.total == 2 and len(second.entry) == 1
    assert link(second, "next") is None
    assert link(second, "previous") is not None
    assert {first.entry[0].resource.id, second.entry[0].resource.id} == {
        s.study_instance_uid for s in archive.values()}


def test_the_page_size_is_bounded(live_server, archive):
    parsed = bundle(get(live_server, "ImagingStudy?_count=5000"))
    assert "_count=100&" in link(parsed, "self")
    assert len(parsed.entry) == 2
    counted = bundle(get(live_server, "ImagingStudy?_count=0"))
    assert counted.total == 2 and not counted.entry


@pytest.mark.parametrize("query", ["_count=-1", "_count=ten", "_offset=1.5"])
def test_bad_paging_numbers_are_a_400(live_server, archive, query):
    outcome(get(live_server, f"ImagingStudy?{query}"), 400)


def test_unknown_parameters_are_ignored_unless_handling_is_strict(live_server, archive):
    lenient = bundle(get(live_server, "ImagingStudy?colour=blue&modality=CT"))
    assert lenient.total == 1
    assert "colour" not in link(lenient, "self")
    strict = get(live_server, "ImagingStudy?colour=blue",
                 headers={"Prefer": "handling=strict"})
    assert "colour" in outcome(strict, 400).issue[0].diagnostics
    assert bundle(get(live_server, "ImagingStudy?modality=CT",
                      headers={"Prefer": "handling=strict"})).total == 1


def test_an_unsupported_modifier_is_a_400_rather_than_a_wider_search(live_server, archive):
    outcome(get(live_server, "ImagingStudy?modality:not=CT"), 400)
    outcome(get(live_server, "ImagingStudy?patient.name=Paula"), 400)


# --- access and audit ----------------------------------------------------------------------


def test_a_doctor_without_a_grant_finds_nothing_and_reads_nothing(live_server, archive, dora):
    assert bundle(get(live_server, "ImagingStudy", user="dora")).total == 0
    assert bundle(get(live_server, "Patient", user="dora")).total == 0
    uid = archive["paula"].study_instance_uid
    refused = get(live_server, f"ImagingStudy/{uid}", user="dora")
    unknown = get(live_server, "ImagingStudy/1.2.3.4.5", user="dora")
    assert outcome(refused, 404).model_dump() == outcome(unknown, 404).model_dump()
    outcome(get(live_server, f"Patient/{archive['paula'].patient_id}", user="dora"), 404)
    assert AuditEvent.objects.filter(username="dora", action=AuditAction.VIEW,
                                     outcome=Outcome.DENIED, object_uid=uid).exists()
    assert AuditEvent.objects.filter(username="dora", action=AuditAction.VIEW,
                                     outcome=Outcome.FAILED, object_uid="1.2.3.4.5").exists()


def test_a_doctor_with_a_grant_sees_that_patient_only(live_server, archive, granted):
    assert study_uids(get(live_server, "ImagingStudy", user="dora")) == {
        archive["paula"].study_instance_uid}
    uid = archive["charlie"].study_instance_uid
    outcome(get(live_server, f"ImagingStudy/{uid}", user="dora"), 404)


def test_a_patient_sees_only_her_own_records(live_server, archive):
    paula, charlie = archive["paula"], archive["charlie"]
    assert study_uids(get(live_server, "ImagingStudy", user="paula")) == {
        paula.study_instance_uid}
    # Naming the other patient does not widen the search.
    assert study_uids(get(live_server, "ImagingStudy?patient.identifier=CHARLIE-002",
                          user="paula")) == set()
    outcome(get(live_server, f"ImagingStudy/{charlie.study_instance_uid}", user="paula"), 404)
    outcome(get(live_server, f"Patient/{charlie.patient_id}", user="paula"), 404)
    mine = get(live_server, f"ImagingStudy/{paula.study_instance_uid}", user="paula")
    assert parsed(ImagingStudy, mine).id == paula.study_instance_uid


def test_a_search_records_one_entry_per_patient_returned(live_server, archive):
    before = AuditEvent.objects.count()
    bundle(get(live_server, "ImagingStudy?date=ge2025-01-01"))
    entries = AuditEvent.objects.order_by("seq")[before:]
    assert {(e.action, e.outcome, e.username) for e in entries} == {
        (AuditAction.SEARCH, Outcome.ALLOWED, "alice")}
    assert {e.patient_pk for e in entries} == {s.patient_id for s in archive.values()}
    assert len(entries) == 2
    assert entries[0].detail["query"]["fhir"] == "ImagingStudy"


def test_a_search_that_finds_nothing_is_on_the_record_too(live_server, archive, dora):
    before = AuditEvent.objects.count()
    bundle(get(live_server, "ImagingStudy", user="dora"))
    (entry,) = AuditEvent.objects.order_by("seq")[before:]
    assert (entry.action, entry.detail["hits"], entry.patient_pk) == (
        AuditAction.SEARCH, 0, None)


def test_a_read_is_recorded_as_a_view_of_the_study(live_server, archive):
    uid = archive["paula"].study_instance_uid
    get(live_server, f"ImagingStudy/{uid}")
    assert AuditEvent.objects.filter(username="alice", action=AuditAction.VIEW,
                                     outcome=Outcome.ALLOWED, object_uid=uid).exists()


# --- Patient -------------------------------------------------------------------------------


def test_a_patient_resource_has_identifier_name_gender_and_birth_date(live_server, archive):
    record = archive["paula"].patient
    response = get(live_server, f"Patient/{record.pk}")
    assert response.status_code == 200
    patient = parsed(FhirPatient, response)
    assert patient.identifier[0].value == "PAULA-001"
    assert patient.identifier[0].type.coding[0].code == "MR"
    assert (patient.name[0].family, patient.name[0].given) == ("Pereira", ["Paula"])
    assert patient.gender == "female"
    assert str(patient.birthDate) == "1975-04-12"
    assert patient.managingOrganization.display == "Clínica Sul"


@pytest.mark.parametrize(("query", "expected"), [
    ("identifier=PAULA-001", {"PAULA-001"}),
    ("identifier=|CHARLIE-002", {"CHARLIE-002"}),
    ("identifier=PAULA-001,CHARLIE-002", {"PAULA-001", "CHARLIE-002"}),
    ("identifier=PAULA", set()),
    ("name=pereira", {"PAULA-001"}),
    ("name:contains=aul", {"PAULA-001"}),
    ("name=Paula Pereira", {"PAULA-001"}),
    ("name=costa,pereira", {"PAULA-001", "CHARLIE-002"}),
    ("birthdate=1990", {"CHARLIE-002"}),
    ("birthdate=lt1980-01-01", {"PAULA-001"}),
])
def test_patients_by_identifier_name_and_birth_date(live_server, archive, query, expected):
    found = resources(bundle(get(live_server, f"Patient?{query}")))
    assert all(isinstance(p, FhirPatient) for p in found)
    assert {p.identifier[0].value for p in found} == expected


def test_a_patient_search_records_each_patient_returned(live_server, archive):
    before = AuditEvent.objects.count()
    bundle(get(live_server, "Patient?identifier=PAULA-001"))
    (entry,) = AuditEvent.objects.order_by("seq")[before:]
    assert (entry.action, entry.patient_pk) == (AuditAction.SEARCH,
                                                archive["paula"].patient_id)


def test_an_unknown_patient_id_is_a_404(live_server, archive):
    outcome(get(live_server, "Patient/999999"), 404)
    outcome(get(live_server, "Patient/not-a-number"), 404)


# --- DiagnosticReport ----------------------------------------------------------------------


def finalize(doctor, study: Study, text: service.ReportText = TEXT):
    return service.finalize(doctor, Actor.for_user(doctor), study, text)


def reports(response: requests.Response) -> list[DiagnosticReport]:
    found = resources(bundle(response))
    assert all(isinstance(r, DiagnosticReport) for r in found)
    return found


def test_only_a_final_report_is_a_diagnostic_report(live_server, archive, granted):
    paula = archive["paula"]
    assert reports(get(live_server, "DiagnosticReport")) == []
    draft = service.save_preliminary(granted, Actor.for_user(granted), paula, TEXT)
    assert reports(get(live_server, "DiagnosticReport")) == []
    outcome(get(live_server, f"DiagnosticReport/{draft.pk}"), 404)
    outcome(get(live_server, f"DiagnosticReport/{draft.pk}", user="dora"), 404)
    final = finalize(granted, paula)
    (found,) = reports(get(live_server, "DiagnosticReport"))
    assert found.id == str(final.pk)


def test_a_final_report_says_what_the_doctor_signed(live_server, archive, granted):
    paula = archive["paula"]
    final = finalize(granted, paula)
    response = get(live_server, f"DiagnosticReport/{final.pk}")
    assert response.status_code == 200
    report = parsed(DiagnosticReport, response)
    assert report.status == "final"
    assert report.subject.reference == f"Patient/{paula.patient_id}"
    assert report.imagingStudy[0].reference == f"ImagingStudy/{paula.study_instance_uid}"
    assert report.conclusion == "Exame normal."
    assert report.performer[0].display == "Dora Lima"
    assert report.performer[0].identifier.value == "CRM-RS 12345"
    text = report.presentedForm[0].data.decode()
    assert text == base64.b64decode(response.json()["presentedForm"][0]["data"]).decode()
    assert "Sem alterações pleuropulmonares." in text and "Exame normal." in text
    assert report.presentedForm[0].contentType.startswith("text/plain")
    assert report.issued is not None
    assert f"urn:oid:{final.instance.sop_instance_uid}" in {i.value for i in report.identifier}


def test_diagnostic_reports_by_patient_and_accession(live_server, archive, alice, granted):
    paula, charlie = archive["paula"], archive["charlie"]
    mine = finalize(granted, paula)
    User.objects.filter(pk=alice.pk).update(first_name="Alice", last_name="Souza",
                                            professional_id="CRM-RS 1")
    alice.refresh_from_db()
    theirs = finalize(alice, charlie, service.ReportText("Sem alterações.", "Normal."))

    def ids(query: str) -> set[Any]:
        return {r.id for r in reports(get(live_server, f"DiagnosticReport?{query}"))}

    assert ids("patient.identifier=PAULA-001") == {str(mine.pk)}
    assert ids("subject:Patient.identifier=PAULA-001") == {str(mine.pk)}
    assert ids(f"subject=Patient/{paula.patient_id}") == {str(mine.pk)}
    assert ids(f"patient={paula.patient_id}") == {str(mine.pk)}
    assert ids("identifier=ACC-PAULA-1") == {str(mine.pk)}
    assert ids("date=2026-03-02") == {str(mine.pk)}
    assert ids("identifier=ACC-CHARLIE-1") == {str(theirs.pk)}
    assert ids("status=final") == {str(mine.pk), str(theirs.pk)}
    assert ids("status=amended") == set()


def test_an_amended_report_replaces_the_final_one(live_server, archive, granted):
    paula = archive["paula"]
    first = finalize(granted, paula)
    amended = service.amend(granted, Actor.for_user(granted), paula,
                            service.ReportText("Nódulo de 4 mm.", "Controle em 12 meses."),
                            "Nódulo visto na revisão do exame.")
    (found,) = reports(get(live_server, "DiagnosticReport"))
    assert (found.id, found.status) == (str(amended.pk), "amended")
    outcome(get(live_server, f"DiagnosticReport/{first.pk}"), 404)


def test_reports_are_seen_as_their_studies_are(live_server, archive, granted, charlie):
    final = finalize(granted, archive["paula"])
    assert [r.id for r in reports(get(live_server, "DiagnosticReport", user="paula"))] == [
        str(final.pk)]
    assert reports(get(live_server, "DiagnosticReport", user="charlie")) == []
    outcome(get(live_server, f"DiagnosticReport/{final.pk}", user="charlie"), 404)
    mine = get(live_server, f"DiagnosticReport/{final.pk}", user="paula")
    assert parsed(DiagnosticReport, mine).id == str(final.pk)
    assert AuditEvent.objects.filter(username="charlie", action=AuditAction.VIEW,
                                     outcome=Outcome.DENIED).exists()
    assert AuditEvent.objects.filter(username="paula", action=AuditAction.VIEW,
                                     outcome=Outcome.ALLOWED,
                                     study_uid=archive["paula"].study_instance_uid).exists()
