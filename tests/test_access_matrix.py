"""Every principal against every way in: pages, admin, DICOMweb search and retrieval, the
patient portal, download links, exports, receipt codes, API tokens. One study (paula's, at
Clínica Sul) is the target; each cell says whether the principal reaches it, and every
refusal of a direct UID is on the record.

Code sessions are in tests/test_code_sessions.py; DICOM peers (bound to a clinic or not) in
tests/test_dimse_peers.py.
"""

from __future__ import annotations

import json

import pytest
from django.test import Client

from accounts.models import AccessGrant, Clinic, User
from audit.models import AuditEvent

# role fixture -> does it reach paula's study?
ROLES = {
    "alice": True,          # platform admin (superuser)
    "olga": False,          # admin of another clinic
    "dora_granted": True,   # doctor with a care relationship at her clinic
    "dora": False,          # the same doctor, no grant
    "tina": False,          # technician: stores, does not browse
    "paula": True,          # the patient herself
    "charlie": False,       # another patient
}


@pytest.fixture
def dora_granted(dora: User, paulas_record) -> User:
    clinic = Clinic.objects.get_or_create(name="Clínica Sul")[0]
    dora.clinics.add(clinic)
    AccessGrant.objects.create(doctor=dora, patient=paulas_record, clinic=clinic)
    return dora


# Beyond reading: who may do what else to paula's record, by principal.
MAY = {
    #               export  issue code  mint token  admin page
    "alice":        (True,  True,       True,       True),
    "olga":         (False, False,      True,       False),
    "dora_granted": (False, False,      True,       False),
    "dora":         (False, False,      True,       False),
    "tina":         (False, True,       True,       False),
    "paula":        (True,  False,      False,      False),  # no second factor yet
    "charlie":      (False, False,      False,      False),
}


@pytest.fixture(params=sorted(ROLES))
def role(request, paulas_study, charlies_study) -> tuple[str, Client, bool]:
    user = request.getfixturevalue(request.param)
    client = Client()
    client.force_login(user)
    return user.username, client, ROLES[request.param]


def _denied_attempts(username: str, uid: str) -> int:
    return AuditEvent.objects.filter(username=username, study_uid=uid,
                                     outcome="denied").count()


def test_the_study_list_page(role, paulas_study):
    _, client, allowed = role
    # Staff reach it on the study list; a patient is sent to her own exams page.
    page = client.get("/imaging/", follow=True).content.decode()
    assert (paulas_study.study_instance_uid in page) is allowed


def test_dicomweb_search(role, paulas_study):
    _, client, allowed = role
    response = client.get("/dicomweb/studies",
                          {"StudyInstanceUID": paulas_study.study_instance_uid})
    assert response.status_code == 200
    found = [s["0020000D"]["Value"][0] for s in json.loads(response.content or b"[]")]
    assert (found == [paulas_study.study_instance_uid]) is allowed
    assert found in ([], [paulas_study.study_instance_uid])


def test_dicomweb_retrieval_by_uid(role, paulas_study):
    username, client, allowed = role
    uid = paulas_study.study_instance_uid
    response = client.get(f"/dicomweb/studies/{uid}/metadata",
                          HTTP_ACCEPT="application/dicom+json")
    assert response.status_code == (200 if allowed else 404)
    assert _denied_attempts(username, uid) == (0 if allowed else 1)


def test_the_patient_portal_exam_page(role, paulas_study):
    _, client, allowed = role
    uid = paulas_study.study_instance_uid
    response = client.get(f"/patient/exams/{uid}/")
    if allowed:
        assert response.status_code in (200, 302)  # staff are sent to the staff pages
    else:
        assert response.status_code in (302, 403, 404)
        assert b"Pereira" not in response.content


def test_creating_a_download_link(role, paulas_study):
    _, client, allowed = role
    response = client.post("/sharing/links/new/", {
        "study": paulas_study.study_instance_uid, "days": "7", "max_uses": "3",
    })
    assert (response.status_code == 200 and b"/s/" in response.content) is allowed
    if not allowed:
        assert response.status_code in (403, 404)


@pytest.mark.parametrize("path", [
    "/imaging/", "/patient/exams/", "/sharing/", "/audit/my-access/", "/privacy/",
])
def test_anonymous_visitors_are_sent_to_a_login_page(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert "login" in response["Location"] or "/patient/" in response["Location"]


def test_anonymous_dicomweb_gets_401(client, paulas_study):
    for url in ("/dicomweb/studies",
                f"/dicomweb/studies/{paulas_study.study_instance_uid}/metadata"):
        response = client.get(url)
        assert response.status_code == 401
        assert "WWW-Authenticate" in response


def test_exporting_the_patients_data(role, paulas_record):
    from privacy import export

    username, _client, _ = role
    user = User.objects.get(username=username)
    assert export.may_export(user, paulas_record) is MAY[_persona(user)][0]


def test_issuing_a_receipt_code(role, paulas_record):
    from patients import codes

    username, _client, _ = role
    user = User.objects.get(username=username)
    try:
        codes.issue_code(paulas_record, user)
        issued = True
    except codes.NotAllowed:
        issued = False
    assert issued is MAY[_persona(user)][1]


def test_minting_an_api_token(role):
    username, client, _ = role
    user = User.objects.get(username=username)
    response = client.post("/accounts/tokens/", {"name": "viewer"})
    assert (response.status_code == 200 and bool(response.context["secret"])) is \
        MAY[_persona(user)][2]


def test_the_admin_study_page(role, paulas_study):
    username, client, _ = role
    user = User.objects.get(username=username)
    response = client.get(f"/admin/imaging/study/{paulas_study.pk}/change/")
    if MAY[_persona(user)][3]:
        assert response.status_code == 200
    else:
        assert response.status_code in (302, 403, 404)
        assert b"Pereira" not in response.content


def test_the_admin_patient_list_shows_only_the_clinics_patients(client, olga, alice,
                                                                 paulas_study):
    client.force_login(olga)
    page = client.get("/admin/imaging/patient/")
    assert page.status_code == 200 and b"Pereira" not in page.content
    client.force_login(alice)
    assert b"Pereira" in client.get("/admin/imaging/patient/").content


def _persona(user: User) -> str:
    granted = AccessGrant.objects.filter(doctor=user).exists()
    return "dora_granted" if user.username == "dora" and granted else user.username


def test_a_clinic_admin_sees_only_her_clinics_accounts_and_cannot_make_a_superuser(
        client, olga, dora, paula, paulas_record):
    client.force_login(olga)
    listing = client.get("/admin/accounts/user/").content.decode()
    assert "dora" not in listing and "paula" not in listing and "olga" in listing
    assert client.get(f"/admin/accounts/user/{dora.pk}/change/").status_code in (302, 404)
    form = client.get(f"/admin/accounts/user/{olga.pk}/change/")
    assert form.status_code == 200
    assert 'name="is_superuser"' not in form.content.decode()


def test_a_clinic_admin_reads_the_trail_of_her_clinic_only(client, olga, alice, dora,
                                                           paulas_study):
    from audit.trail import Actor, Target, record

    record("view", Actor.for_user(dora), Target.study(paulas_study))
    client.force_login(olga)
    listing = client.get("/admin/audit/auditevent/").content.decode()
    assert paulas_study.study_instance_uid not in listing and "dora" not in listing
    export = client.get("/admin/audit/auditevent/export/",
                        {"start": "2000-01-01", "end": "2100-01-01"})
    assert b"dora" not in b"".join(export.streaming_content)
    client.force_login(alice)
    assert "dora" in client.get("/admin/audit/auditevent/").content.decode()
