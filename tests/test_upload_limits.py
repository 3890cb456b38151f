"""Caps on the staff upload page: a request over ``UPLOAD_MAX_REQUEST_BYTES`` is refused
with 413 before its body is read, one without a length with 411, and a file over
``INGEST_MAX_OBJECT_BYTES`` is dropped as it streams and reported as that file's refusal
while the rest of the request is stored. Nothing of a refused upload is kept: no index
rows, no blobs, no temporary files. The page's CSRF protection still holds."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from django.core.files.uploadhandler import (
    MemoryFileUploadHandler,
    TemporaryFileUploadHandler,
)
from django.http.multipartparser import MultiPartParser
from django.test import Client
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from pydicom import dcmread

from imaging.models import Instance
from imaging.upload_limits import UploadLimits

from .conftest import stored_files

UPLOAD = "/imaging/upload/"


def _file(name: str, content: bytes) -> io.BytesIO:
    upload = io.BytesIO(content)
    upload.name = name
    return upload


def _body(*files: tuple[str, bytes]) -> bytes:
    """The multipart body the test client sends for these files (as the page does)."""
    return encode_multipart(BOUNDARY, {"file": [_file(n, c) for n, c in files]})


@pytest.fixture
def upload_temp(settings, tmp_path: Path) -> Path:
    """Every uploaded file goes to a temporary file in a folder of the test's own."""
    folder = tmp_path / "upload-temp"
    folder.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(folder)
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 0
    return folder


@pytest.fixture
def tina_client(client: Client, tina) -> Client:
    client.force_login(tina)
    return client


class Unreadable(io.RawIOBase):
    """A request body that fails the test if anything reads it."""

    read_from = False

    def read(self, size: int = -1) -> bytes:
        Unreadable.read_from = True
        raise AssertionError("the body was read")

    def readline(self, size: int | None = -1) -> bytes:
        return self.read()


def test_an_upload_announced_larger_than_the_limit_is_413_before_its_body_is_read(
    tina_client, settings, dicom_storage,
):
    settings.UPLOAD_MAX_REQUEST_BYTES = 1000
    body = Unreadable()
    response = tina_client.generic(
        "POST", UPLOAD, CONTENT_TYPE=MULTIPART_CONTENT, CONTENT_LENGTH="1001",
        **{"wsgi.input": body},
    )
    assert response.status_code == 413
    assert "UPLOAD_MAX_REQUEST_BYTES" in response.json()["error"]
    assert "1000" in response.json()["error"]
    assert not Unreadable.read_from
    assert not Instance.objects.exists()
    assert stored_files(dicom_storage) == []


def test_an_upload_exactly_at_the_limit_is_stored(
    tina_client, ct_study, settings, dicom_storage, upload_temp,
):
    paths = ct_study[1][:2]
    files = [(p.name, p.read_bytes()) for p in paths]
    settings.UPLOAD_MAX_REQUEST_BYTES = len(_body(*files))
    response = tina_client.post(UPLOAD, {"file": [_file(n, c) for n, c in files]})
    assert response.status_code == 200, response.content
    assert [r["outcome"] for r in response.json()["results"]] == ["stored", "stored"]
    assert Instance.objects.count() == 2
    assert len(stored_files(dicom_storage)) == 2
    assert list(upload_temp.iterdir()) == []


def test_an_upload_one_byte_over_the_limit_is_413_and_nothing_is_stored(
    tina_client, ct_study, settings, dicom_storage, upload_temp,
):
    paths = ct_study[1][:2]
    files = [(p.name, p.read_bytes()) for p in paths]
    settings.UPLOAD_MAX_REQUEST_BYTES = len(_body(*files)) - 1
    response = tina_client.post(UPLOAD, {"file": [_file(n, c) for n, c in files]})
    assert response.status_code == 413
    assert "UPLOAD_MAX_REQUEST_BYTES" in response.json()["error"]
    assert not Instance.objects.exists()
    assert stored_files(dicom_storage) == []
    assert list(upload_temp.iterdir()) == []


def test_a_file_over_the_object_limit_is_dropped_as_it_streams_and_the_others_are_stored(
    tina_client, ct_study, settings, dicom_storage, upload_temp,
):
    small, large = ct_study[1][0], ct_study[1][1]
    big = large.read_bytes() + b"\0" * 4096  # a valid object with trailing padding
    settings.INGEST_MAX_OBJECT_BYTES = len(big) - 1
    response = tina_client.post(UPLOAD, {
        "file": [_file("big.dcm", big), _file(small.name, small.read_bytes())],
        "path": ["exam/big.dcm", f"exam/{small.name}"],
    })
    assert response.status_code == 200
    big_result, small_result = response.json()["results"]
    assert big_result["name"] == "exam/big.dcm"
    assert big_result["outcome"] == "rejected"
    assert "INGEST_MAX_OBJECT_BYTES" in big_result["reason"]
    assert small_result["name"] == f"exam/{small.name}"
    assert small_result["outcome"] == "stored"
    assert list(Instance.objects.values_list("sop_instance_uid", flat=True)) == [
        dcmread(small).SOPInstanceUID]
    assert len(stored_files(dicom_storage)) == 1
    assert list(upload_temp.iterdir()) == []


def test_a_zip_larger_than_the_object_limit_is_unpacked_since_its_members_are_each_capped(
    tina_client, ct_study, settings, tmp_path, upload_temp,
):
    paths = ct_study[1][:3]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for path in paths:
            zf.write(path, path.name)
    settings.INGEST_MAX_OBJECT_BYTES = max(p.stat().st_size for p in paths)
    assert len(archive.getvalue()) > settings.INGEST_MAX_OBJECT_BYTES
    response = tina_client.post(UPLOAD, {"file": [_file("exam.zip", archive.getvalue())]})
    assert response.status_code == 200
    assert [r["outcome"] for r in response.json()["results"]] == ["stored"] * 3


def test_a_body_bringing_more_than_the_limit_is_stopped_as_it_streams_and_leaves_no_files(
    ct_study, settings, upload_temp,
):
    """What the handler does when the announced length cannot be trusted: Django's parser
    is given a body larger than it says, and stops at the cap however far it is."""
    paths = ct_study[1][:3]
    body = _body(*[(p.name, p.read_bytes()) for p in paths])
    settings.UPLOAD_MAX_REQUEST_BYTES = paths[0].stat().st_size + 10  # inside the 2nd file
    limits = UploadLimits()
    parser = MultiPartParser(
        {"CONTENT_TYPE": MULTIPART_CONTENT, "CONTENT_LENGTH": "1000"}, io.BytesIO(body),
        [limits, MemoryFileUploadHandler(), TemporaryFileUploadHandler()],
    )
    _, files = parser.parse()
    assert limits.too_large
    assert [r.name for r in limits.received] == [paths[0].name, paths[1].name]
    # The file before the cap is parsed (the view then refuses the whole request); the one
    # the cap cut was closed and its temporary file removed.
    [first] = files.getlist("file")
    assert len(list(upload_temp.iterdir())) == 1
    first.close()
    assert list(upload_temp.iterdir()) == []


# --- CSRF ---------------------------------------------------------------------------------


@pytest.fixture
def csrf_client(tina) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(tina)
    return client


def test_an_upload_without_the_csrf_token_is_still_refused(csrf_client, ct_study):
    path = ct_study[1][0]
    response = csrf_client.post(UPLOAD, {"file": [_file(path.name, path.read_bytes())]})
    assert response.status_code == 403
    assert not Instance.objects.exists()


def test_an_upload_with_the_csrf_token_in_the_header_is_stored(csrf_client, ct_study):
    csrf_client.get(UPLOAD)
    token = csrf_client.cookies["csrftoken"].value
    path = ct_study[1][0]
    response = csrf_client.post(UPLOAD, {"file": [_file(path.name, path.read_bytes())]},
                                headers={"X-CSRFToken": token})
    assert response.status_code == 200
    assert Instance.objects.count() == 1


def test_an_upload_with_the_csrf_token_as_a_form_field_is_stored(csrf_client, ct_study):
    csrf_client.get(UPLOAD)
    token = csrf_client.cookies["csrftoken"].value
    path = ct_study[1][0]
    response = csrf_client.post(UPLOAD, {"csrfmiddlewaretoken": token,
                                         "file": [_file(path.name, path.read_bytes())]})
    assert response.status_code == 200
    assert Instance.objects.count() == 1


# --- A real server ------------------------------------------------------------------------


@pytest.fixture
def tina_session(live_server, client: Client, tina) -> Iterator[requests.Session]:
    """tina's signed-in session against the live server, with the page's CSRF token."""
    client.force_login(tina)
    session = requests.Session()
    session.cookies.set("sessionid", client.cookies["sessionid"].value)
    page = session.get(f"{live_server.url}{UPLOAD}", timeout=30)
    assert page.status_code == 200
    session.headers["X-CSRFToken"] = session.cookies["csrftoken"]
    yield session
    session.close()


def _pieces(data: bytes, size: int = 4096) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


@pytest.mark.django_db(transaction=True)
def test_a_chunked_upload_is_refused_with_a_reason_before_it_is_read_and_nothing_is_stored(
    live_server, tina_session, ct_study, settings, dicom_storage,
):
    paths = ct_study[1][:3]
    body = _body(*[(p.name, p.read_bytes()) for p in paths])
    settings.UPLOAD_MAX_REQUEST_BYTES = len(body) // 2
    response = tina_session.post(f"{live_server.url}{UPLOAD}", data=_pieces(body),
                                 headers={"Content-Type": MULTIPART_CONTENT}, timeout=60)
    assert response.request.headers["Transfer-Encoding"] == "chunked"
    assert response.status_code == 411
    error = response.json()["error"]
    assert "Content-Length" in error and "UPLOAD_MAX_REQUEST_BYTES" in error
    assert not Instance.objects.exists()
    assert stored_files(dicom_storage) == []


@pytest.mark.django_db(transaction=True)
def test_a_real_server_answers_an_upload_over_the_limit_with_the_413_reason(
    live_server, tina_session, ct_study, settings, dicom_storage,
):
    path = ct_study[1][0]
    settings.UPLOAD_MAX_REQUEST_BYTES = path.stat().st_size
    response = tina_session.post(f"{live_server.url}{UPLOAD}",
                                 files={"file": (path.name, path.read_bytes())}, timeout=60)
    assert response.status_code == 413
    assert "UPLOAD_MAX_REQUEST_BYTES" in response.json()["error"]
    assert not Instance.objects.exists()
    assert stored_files(dicom_storage) == []
