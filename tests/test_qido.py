"""QIDO-RS: searches find what the standard's matching rules say, and only what the caller
may see. paula and charlie each have a study; alice (admin) sees both; dora (doctor) sees
paula's only with a grant; charlie never sees paula's, and his attempt is on the record.
"""

from __future__ import annotations

import gzip
import os
from typing import Any

import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from accounts.models import AccessGrant, Clinic
from audit.models import AuditAction, AuditEvent
from imaging.models import Patient
from tests.conftest import PASSWORD
from tests.wado_support import store

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def archive(ct_study, other_study, paula, charlie):
    store(ct_study[1], paula)
    store(other_study[1], charlie)
    return {"paula": ct_study[0], "charlie": other_study[0]}


def session_for(user: str) -> requests.Session:
    session = requests.Session()
    session.auth = (user, PASSWORD)
    return session


def client_for(live_server, user: str) -> DICOMwebClient:
    return DICOMwebClient(url=f"{live_server.url}/dicomweb", session=session_for(user))


def get(live_server, path: str, user: str = "alice", **kwargs) -> requests.Response:
    return session_for(user).get(f"{live_server.url}/dicomweb/{path}", timeout=30, **kwargs)


def uids(response_or_list, tag: str = "0020000D") -> set[str]:
    items = response_or_list.json() if hasattr(response_or_list, "json") else response_or_list
    return {item[tag]["Value"][0] for item in items}


def value(item: dict[str, Any], tag: str) -> Any:
    return item[tag].get("Value", [None])[0]


def test_alice_finds_every_study_with_computed_attributes(live_server, alice, archive):
    studies = client_for(live_server, "alice").search_for_studies()
    by_uid = {value(s, "0020000D"): s for s in studies}
    assert set(by_uid) == {archive["paula"], archive["charlie"]}
    paula = by_uid[archive["paula"]]
    assert paula["00080061"]["Value"] == ["CT"]  # ModalitiesInStudy
    assert value(paula, "00201206") == 2  # NumberOfStudyRelatedSeries
    assert value(paula, "00201208") == 12  # NumberOfStudyRelatedInstances
    assert value(paula, "00100010") == {"Alphabetic": "Pereira^Paula"}
    assert value(paula, "00100020") == "PAULA-001"
    assert value(paula, "00080020") == "20260302"
    assert value(paula, "00081030") == "CT tórax"
    assert value(paula, "00081190").endswith(f"/dicomweb/studies/{archive['paula']}")


def test_series_and_instances_are_found_at_every_level_and_nested(live_server, alice,
                                                                  archive):
    client = client_for(live_server, "alice")
    assert len(client.search_for_series()) == 3
    series = client.search_for_series(study_instance_uid=archive["paula"])
    assert len(series) == 2
    assert {value(s, "00201209") for s in series} == {6}  # NumberOfSeriesRelatedInstances
    assert {value(s, "00080060") for s in series} == {"CT"}
    series_uid = value(series[0], "0020000E")
    instances = client.search_for_instances(study_instance_uid=archive["paula"],
                                            series_instance_uid=series_uid)
    assert [value(i, "00200013") for i in instances] == [1, 2, 3, 4, 5, 6]
    assert {value(i, "00280010") for i in instances} == {128}
    sop_uid = value(instances[0], "00080018")
    assert value(instances[0], "00081190").endswith(
        f"/studies/{archive['paula']}/series/{series_uid}/instances/{sop_uid}")
    assert len(client.search_for_instances(study_instance_uid=archive["paula"])) == 12
    every = client.search_for_instances()
    assert len(every) == 16
    # Outside a study, instances carry their study's and series' attributes too.
    assert {value(i, "00100020") for i in every} == {"PAULA-001", "CHARLIE-002"}


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"PatientID": "PAULA-001"}, {"paula"}),
        ({"PatientID": "*001"}, {"paula"}),
        ({"PatientID": "PAULA-00?"}, {"paula"}),
        ({"PatientID": "paula-001"}, set()),  # LO is matched with case
        ({"00100020": "*A-00*"}, {"paula"}),
        ({"PatientName": "pereira^paula"}, {"paula"}),  # PN ignores case
        ({"PatientName": "PERE*"}, {"paula"}),
        ({"PatientName": "*charlie"}, {"charlie"}),
        ({"PatientName": "paula"}, set()),
        ({"PatientName": "paula", "fuzzymatching": "true"}, {"paula"}),
        ({"PatientName": "cost charl", "fuzzymatching": "true"}, {"charlie"}),
        ({"StudyDate": "20260302"}, {"paula"}),
        ({"StudyDate": "20260101-20261231"}, {"paula"}),
        ({"StudyDate": "19700102-"}, {"paula", "charlie"}),
        ({"StudyDate": "-20251231"}, {"charlie"}),
        ({"StudyTime": "0900-1000"}, {"paula", "charlie"}),
        ({"StudyTime": "1000-"}, set()),
        ({"StudyTime": "09"}, {"paula", "charlie"}),
        ({"ModalitiesInStudy": "MR"}, {"charlie"}),
        ({"ModalitiesInStudy": "CT\\MR"}, {"paula", "charlie"}),
        ({"AccessionNumber": "ACC-CHARLIE-1"}, {"charlie"}),
        ({"AccessionNumber": ""}, {"paula", "charlie"}),  # universal
        ({"PatientBirthDate": "19750412"}, {"paula"}),
        ({"StudyDescription": "RM*"}, {"charlie"}),
        ({"PatientSex": "M"}, {"charlie"}),
    ],
)
def test_studies_match_by_the_standards_rules(live_server, alice, archive, filters, expected):
    response = get(live_server, "studies", params=filters)
    assert response.status_code == 200, response.text
    assert uids(response) == {archive[name] for name in expected}


def test_uid_lists_match_any_of_their_uids(live_server, alice, archive):
    both = f"{archive['paula']}\\{archive['charlie']}"
    assert uids(get(live_server, "studies", params={"StudyInstanceUID": both})) == set(
        archive.values())
    raw = get(live_server, f"studies?StudyInstanceUID={both}")
    assert uids(raw) == set(archive.values())
    commas = get(live_server, f"studies?StudyInstanceUID={archive['paula']},1.2.3")
    assert uids(commas) == {archive["paula"]}


OHIF_QUERIES = [
    "studies?limit=101&offset=0&fuzzymatching=false"
    "&includefield=00081030%2C00080060%2C00080090%2C00100030&StudyDate=19700102-",
    "studies?00100020=*PAULA*&fuzzymatching=false&includefield=00081030%2C00080060",
    "studies?00100020=PAULA-001&includefield=00081030%2C00080060",
    "studies?StudyDate=20260101-20261231&fuzzymatching=false&includefield=00081030",
    "studies?PatientName=%2Apereira%2A&fuzzymatching=false&includefield=00081030%2C00080060",
    "studies?PatientName=%252Apereira%252A&fuzzymatching=false",  # encoded twice
]


@pytest.mark.parametrize("query", OHIF_QUERIES)
def test_what_ohif_sends_is_understood(live_server, alice, archive, query):
    response = get(live_server, query)
    assert response.status_code == 200, response.text
    studies = response.json()
    assert uids(studies) >= {archive["paula"]}
    paula = next(s for s in studies if value(s, "0020000D") == archive["paula"])
    assert value(paula, "00081030") == "CT tórax"


def test_ohif_uid_lists_and_series_queries_are_understood(live_server, alice, archive):
    both = f"{archive['paula']}\\{archive['charlie']}"
    response = get(live_server, f"studies?StudyInstanceUID={both}&fuzzymatching=false"
                                "&includefield=00081030%2C00080060")
    assert uids(response) == set(archive.values())
    series = get(live_server, f"studies/{archive['paula']}/series?includefield=00080021"
                              "%2C00080031&fuzzymatching=false")
    assert series.status_code == 200
    assert {value(s, "00080021") for s in series.json()} == {"20260302"}
    assert {value(s, "00080031") for s in series.json()} == {"093000"}


def test_includefield_all_returns_every_attribute_of_the_level(live_server, alice, archive):
    study = get(live_server, "studies", params={"PatientID": "PAULA-001",
                                                "includefield": "all"}).json()[0]
    assert value(study, "00100021") == "DEMO"  # IssuerOfPatientID, from the metadata
    assert value(study, "00080080") == "Clínica Demonstração"
    assert "00280010" not in study  # Rows is an instance attribute
    series = get(live_server, f"studies/{archive['paula']}/series",
                 params={"includefield": "all"}).json()[0]
    assert value(series, "00080070") == "Synthetic"  # Manufacturer
    instance = get(live_server, f"studies/{archive['paula']}/instances",
                   params={"includefield": "all", "limit": 1}).json()[0]
    assert value(instance, "00180050") == 2.5  # SliceThickness
    assert value(instance, "00280100") == 16  # BitsAllocated
    assert "7FE00010" not in instance  # never bulk data in a search


def test_includefield_names_attributes_by_keyword_or_tag(live_server, alice, archive):
    study = get(live_server, "studies?PatientID=PAULA-001&includefield=PatientAge"
                             "&includefield=00080070,InstitutionName").json()[0]
    assert study["00101010"] == {"vr": "AS"}  # asked for, not in the files: empty
    assert value(study, "00080070") == "Synthetic"
    assert value(study, "00080080") == "Clínica Demonstração"


def test_limit_and_offset_page_through_results_with_a_warning(live_server, alice, archive):
    first = get(live_server, "studies", params={"limit": 1})
    assert len(first.json()) == 1
    assert "additional results" in first.headers["Warning"]
    second = get(live_server, "studies", params={"limit": 1, "offset": 1})
    assert len(second.json()) == 1
    assert "Warning" not in second.headers
    assert uids(first) | uids(second) == set(archive.values())
    assert get(live_server, "studies", params={"offset": 5}).json() == []


def test_an_empty_result_is_200_with_an_empty_array(live_server, alice, archive):
    response = get(live_server, "studies", params={"PatientID": "NOBODY"})
    assert response.status_code == 200
    assert response.json() == []
    assert response.headers["Content-Type"].startswith("application/dicom+json")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("studies?NotAnAttribute=1", "unknown attribute"),
        ("studies?99990010=1", "unknown attribute"),
        ("studies?StudyDate=yesterday", "not a date"),
        ("studies?limit=many", "limit"),
        ("studies?fuzzymatching=maybe", "fuzzymatching"),
        ("studies?StudyInstanceUID=1.2.*", "UIDs are matched exactly"),
    ],
)
def test_bad_queries_are_400_with_a_message(live_server, alice, archive, query, message):
    response = get(live_server, query)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_keys_the_index_cannot_match_are_ignored_with_a_warning(live_server, alice, archive):
    response = get(live_server, "studies", params={"PatientWeight": "70"})
    assert response.status_code == 200
    assert len(response.json()) == 2
    assert "PatientWeight query key is not supported" in response.headers["Warning"]


def test_responses_are_gzipped_when_the_client_accepts_it(live_server, alice, archive):
    response = get(live_server, "instances", headers={"Accept-Encoding": "gzip"}, stream=True)
    assert response.headers["Content-Encoding"] == "gzip"
    raw = response.raw.read()
    assert len(gzip.decompress(raw)) > len(raw)
    plain = get(live_server, "instances", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers


def test_unsupported_accept_is_406(live_server, alice, archive):
    response = get(live_server, "studies", headers={"Accept": "application/dicom+xml"})
    assert response.status_code == 406


def test_charlie_sees_only_his_own_study(live_server, charlie, archive):
    studies = client_for(live_server, "charlie").search_for_studies()
    assert uids(studies) == {archive["charlie"]}
    assert len(client_for(live_server, "charlie").search_for_instances()) == 4


def test_charlie_searching_paulas_study_uid_finds_nothing_and_is_on_the_record(
    live_server, charlie, archive
):
    client = client_for(live_server, "charlie")
    found = client.search_for_studies(search_filters={"StudyInstanceUID": archive["paula"]})
    assert found == []
    assert client.search_for_series(study_instance_uid=archive["paula"]) == []
    assert client.search_for_instances(study_instance_uid=archive["paula"]) == []
    events = AuditEvent.objects.filter(action=AuditAction.SEARCH, username="charlie")
    assert any(e.detail["query"].get("StudyInstanceUID") == archive["paula"]
               and e.detail["hits"] == 0 for e in events)
    assert any(e.detail["query"].get("study") == archive["paula"] for e in events)


def test_searches_that_return_patients_are_recorded_per_patient(live_server, alice, archive):
    client_for(live_server, "alice").search_for_studies()
    events = AuditEvent.objects.filter(action=AuditAction.SEARCH, username="alice")
    assert {e.patient_ref for e in events} == {"PAULA-001^DEMO", "CHARLIE-002^DEMO"}


def test_dora_sees_only_patients_she_holds_a_grant_for(live_server, dora, alice, archive):
    client = client_for(live_server, "dora")
    assert client.search_for_studies() == []
    clinic = Clinic.objects.get_or_create(name="Clínica Sul")[0]
    dora.clinics.add(clinic)
    AccessGrant.objects.create(doctor=dora, clinic=clinic,
                               patient=Patient.objects.get(patient_id="PAULA-001"))
    assert uids(client.search_for_studies()) == {archive["paula"]}
    assert client.search_for_studies(search_filters={"PatientID": "CHARLIE-002"}) == []


def test_a_grant_at_a_clinic_she_does_not_belong_to_shows_nothing(live_server, dora, archive):
    clinic = Clinic.objects.create(name="Clínica Norte")
    AccessGrant.objects.create(doctor=dora, clinic=clinic,
                               patient=Patient.objects.get(patient_id="PAULA-001"))
    assert client_for(live_server, "dora").search_for_studies() == []


def test_technicians_store_but_find_nothing(live_server, tina, archive):
    assert client_for(live_server, "tina").search_for_studies() == []
