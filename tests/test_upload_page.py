"""The staff upload page: one request per file, a result per object, staff only."""

from __future__ import annotations

import ast
import gettext
import io
import zipfile
from pathlib import Path

import pytest
from django.test import Client
from pydicom import dcmread

from imaging.models import Instance

from .conftest import stored_files

UPLOAD = "/imaging/upload/"


def _post(client: Client, *files: tuple[str, bytes], **extra):
    uploads = [io.BytesIO(content) for _, content in files]
    for upload, (name, _) in zip(uploads, files, strict=True):
        upload.name = name
    return client.post(UPLOAD, {"file": uploads}, **extra)


@pytest.fixture
def tina_client(client: Client, tina) -> Client:
    client.force_login(tina)
    return client


def test_tina_uploads_a_file_and_gets_its_result_as_json(tina_client, ct_study):
    _, paths = ct_study
    response = _post(tina_client, (paths[0].name, paths[0].read_bytes()))
    assert response.status_code == 200
    [result] = response.json()["results"]
    assert result["name"] == paths[0].name
    assert result["outcome"] == "stored"
    assert result["sop_instance_uid"] == dcmread(paths[0]).SOPInstanceUID
    instance = Instance.objects.get(sop_instance_uid=result["sop_instance_uid"])
    assert instance.source == "upload:tina"


def test_the_same_file_twice_is_already_in_the_archive(tina_client, ct_study, dicom_storage):
    _, paths = ct_study
    _post(tina_client, (paths[0].name, paths[0].read_bytes()))
    again = _post(tina_client, (paths[0].name, paths[0].read_bytes()))
    assert again.status_code == 200
    assert again.json()["results"][0]["outcome"] == "duplicate"
    assert Instance.objects.count() == 1
    assert len(stored_files(dicom_storage)) == 1


def test_a_different_object_with_a_stored_uid_is_a_conflict_and_the_original_is_kept(
    tina_client, ct_study, tmp_path
):
    _, paths = ct_study
    _post(tina_client, (paths[0].name, paths[0].read_bytes()))
    altered = dcmread(paths[0])
    altered.StudyDescription = "something else"
    buffer = io.BytesIO()
    altered.save_as(buffer, enforce_file_format=True)
    response = _post(tina_client, ("altered.dcm", buffer.getvalue()))
    assert response.status_code == 422
    [result] = response.json()["results"]
    assert result["outcome"] == "conflict"
    assert "UID" in result["message"]
    assert Instance.objects.count() == 1


def test_several_files_in_one_request_each_get_a_result(tina_client, ct_study):
    _, paths = ct_study
    response = _post(tina_client, *[(p.name, p.read_bytes()) for p in paths[:3]])
    assert response.status_code == 200
    assert [r["outcome"] for r in response.json()["results"]] == ["stored"] * 3


def test_a_zip_of_several_files_gives_one_result_per_member(tina_client, ct_study, tmp_path):
    _, paths = ct_study
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for path in paths[:4]:
            zf.write(path, f"study/{path.name}")
        zf.writestr("study/.DS_Store", b"finder junk")  # hidden files are not candidates
    response = _post(tina_client, ("exam.zip", archive.getvalue()))
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["name"] for r in results] == [f"exam.zip!study/{p.name}" for p in paths[:4]]
    assert {r["outcome"] for r in results} == {"stored"}
    assert Instance.objects.count() == 4


def test_a_zip_with_one_bad_member_stores_the_others_and_rejects_that_one(tina_client,
                                                                           ct_study):
    _, paths = ct_study
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(paths[0], paths[0].name)
        zf.writestr("notes.txt", b"not an image")
    response = _post(tina_client, ("mixed.zip", archive.getvalue()))
    assert response.status_code == 200
    outcomes = {r["name"]: r["outcome"] for r in response.json()["results"]}
    assert outcomes == {f"mixed.zip!{paths[0].name}": "stored", "mixed.zip!notes.txt": "rejected"}


def test_an_empty_or_broken_zip_is_rejected_with_a_reason(tina_client, dicom_storage):
    empty = io.BytesIO()
    zipfile.ZipFile(empty, "w").close()
    response = _post(tina_client, ("empty.zip", empty.getvalue()))
    assert response.status_code == 422
    [result] = response.json()["results"]
    assert result["outcome"] == "rejected" and result["reason"]

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.dcm", b"x" * 5000)
    damaged = bytearray(archive.getvalue())
    damaged[60:80] = b"\xff" * 20  # the central directory
    response = _post(tina_client, ("damaged.zip", bytes(damaged)))
    assert response.status_code == 422
    [result] = response.json()["results"]
    assert result["outcome"] == "rejected" and "ZIP" in result["reason"]
    assert stored_files(dicom_storage) == []


def test_a_file_that_is_not_dicom_gets_422_with_a_reason_and_nothing_is_stored(
    tina_client, dicom_storage
):
    response = _post(tina_client, ("report.pdf", b"%PDF-1.7 not an image at all"))
    assert response.status_code == 422
    [result] = response.json()["results"]
    assert result["outcome"] == "rejected"
    assert result["name"] == "report.pdf"
    assert "not a DICOM file" in result["reason"]
    assert Instance.objects.count() == 0
    assert stored_files(dicom_storage) == []


def test_the_path_sent_with_a_file_names_it_in_the_result(tina_client, ct_study):
    _, paths = ct_study
    upload = io.BytesIO(paths[0].read_bytes())
    upload.name = paths[0].name
    response = tina_client.post(UPLOAD, {"file": upload, "path": f"exam/CT/{paths[0].name}"})
    assert response.json()["results"][0]["name"] == f"exam/CT/{paths[0].name}"


def test_a_request_without_a_file_is_a_400_with_an_error(tina_client):
    response = tina_client.post(UPLOAD, {})
    assert response.status_code == 400
    assert response.json()["error"]


@pytest.mark.parametrize("persona", ["dora", "paula"])
def test_doctors_and_patients_may_not_upload(client, persona, request, ct_study, dicom_storage):
    client.force_login(request.getfixturevalue(persona))
    _, paths = ct_study
    assert client.get(UPLOAD).status_code == 403
    assert _post(client, (paths[0].name, paths[0].read_bytes())).status_code == 403
    assert Instance.objects.count() == 0
    assert stored_files(dicom_storage) == []


def test_admins_may_upload(client, alice, ct_study):
    client.force_login(alice)
    _, paths = ct_study
    assert client.get(UPLOAD).status_code == 200
    assert _post(client, (paths[0].name, paths[0].read_bytes())).status_code == 200


def test_anonymous_users_are_sent_to_the_login_page(client, db, ct_study):
    response = client.get(UPLOAD)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={UPLOAD}"
    _, paths = ct_study
    assert _post(client, (paths[0].name, paths[0].read_bytes())).status_code == 302
    assert Instance.objects.count() == 0


def test_a_post_without_the_csrf_token_is_refused(tina, ct_study):
    client = Client(enforce_csrf_checks=True)
    client.force_login(tina)
    _, paths = ct_study
    refused = _post(client, (paths[0].name, paths[0].read_bytes()))
    assert refused.status_code == 403
    assert Instance.objects.count() == 0

    page = client.get(UPLOAD)
    token = page.context["csrf_token"]
    accepted = _post(client, (paths[0].name, paths[0].read_bytes()), HTTP_X_CSRFTOKEN=str(token))
    assert accepted.status_code == 200


def test_other_methods_are_not_allowed(tina_client):
    assert tina_client.put(UPLOAD).status_code == 405


def test_the_page_offers_files_a_folder_a_drop_zone_and_a_progress_bar(tina_client):
    html = tina_client.get(UPLOAD).content.decode()
    assert 'id="files"' in html and "multiple" in html
    assert "webkitdirectory" in html
    assert 'class="dropzone"' in html
    assert 'id="progress"' in html
    assert 'id="upload-texts"' in html
    assert "csrfmiddlewaretoken" in html


def test_the_page_is_in_brazilian_portuguese_by_default(tina_client, ct_study):
    html = tina_client.get(UPLOAD).content.decode()
    assert '<html lang="pt-br">' in html
    assert "Enviar imagens" in html
    assert "Arraste arquivos ou pastas para cá" in html
    _, paths = ct_study
    result = _post(tina_client, (paths[0].name, paths[0].read_bytes())).json()["results"][0]
    assert result["message"] == "armazenado"
    again = _post(tina_client, (paths[0].name, paths[0].read_bytes())).json()["results"][0]
    assert again["message"] == "já está no acervo"


@pytest.mark.parametrize(
    ("language", "heading", "stored"),
    [("es", "Subir imágenes", "almacenado"), ("en", "Upload images", "stored")],
)
def test_the_page_follows_the_language_chosen_in_the_switcher(
    tina_client, ct_study, language, heading, stored
):
    switched = tina_client.post("/i18n/setlang/", {"language": language, "next": UPLOAD})
    assert switched.status_code == 302 and switched["Location"] == UPLOAD
    html = tina_client.get(UPLOAD).content.decode()
    assert f'<html lang="{language}">' in html
    assert f"<h1>{heading}</h1>" in html
    assert f'<option value="{language}" selected>' in html
    _, paths = ct_study
    result = _post(tina_client, (paths[0].name, paths[0].read_bytes())).json()["results"][0]
    assert result["message"] == stored


LOCALE = Path(__file__).resolve().parent.parent / "locale"


def _po_entries(path: Path) -> list[dict[str, str]]:
    """The entries of a .po file: field name to its joined, unescaped text, plus flags."""
    entries = []
    for block in path.read_text(encoding="utf-8").strip().split("\n\n"):
        entry: dict[str, str] = {"flags": ""}
        field = ""
        for line in block.splitlines():
            if line.startswith("#,"):
                entry["flags"] += line
            elif line.startswith("#|"):
                entry["flags"] += " previous"
            elif line.startswith("#"):
                continue
            elif line.startswith('"'):
                entry[field] += ast.literal_eval(line)
            else:
                field, _, rest = line.partition(" ")
                entry[field] = ast.literal_eval(rest)
        if entry.get("msgid"):
            entries.append(entry)
    return entries


@pytest.mark.parametrize("code", ["pt_BR", "es", "en"])
def test_every_string_is_translated_and_compiled(code):
    messages = LOCALE / code / "LC_MESSAGES"
    entries = _po_entries(messages / "django.po")
    assert entries
    with open(messages / "django.mo", "rb") as fp:
        compiled = gettext.GNUTranslations(fp)
    for entry in entries:
        assert "fuzzy" not in entry["flags"], entry["msgid"]
        assert "previous" not in entry["flags"], f"a guessed translation: {entry['msgid']}"
        if "msgid_plural" in entry:
            assert entry["msgstr[0]"] and entry["msgstr[1]"], entry["msgid"]
            assert compiled.ngettext(entry["msgid"], entry["msgid_plural"], 1) == entry["msgstr[0]"]
        else:
            assert entry["msgstr"], entry["msgid"]
            found = (compiled.pgettext(entry["msgctxt"], entry["msgid"]) if "msgctxt" in entry
                     else compiled.gettext(entry["msgid"]))
            assert found == entry["msgstr"], "recompile the catalogue"


def test_the_english_catalogue_says_what_the_source_says():
    """msgmerge fills a new English message with its nearest old one; that is never right."""
    for entry in _po_entries(LOCALE / "en" / "LC_MESSAGES" / "django.po"):
        if "msgid_plural" in entry:
            assert (entry["msgstr[0]"], entry["msgstr[1]"]) == (
                entry["msgid"], entry["msgid_plural"]), entry["msgid"]
        elif entry["msgid"]:
            assert entry["msgstr"] == entry["msgid"], entry["msgid"]
