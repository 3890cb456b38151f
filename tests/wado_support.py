"""What the WADO-RS tests share: stored studies owned by paula and charlie, a signed-in
``requests`` session against the live server, and a plain multipart reader."""

from __future__ import annotations

from pathlib import Path

import pydicom.data
import pytest
import requests
from django.test import Client

from accounts.models import User
from imaging.ingest import ingest
from imaging.models import Patient

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"


def store(paths: list[Path], owner: User | None = None) -> None:
    for path in paths:
        with path.open("rb") as fp:
            result = ingest(fp, source="test")
        assert result.accepted, result.reason
    if owner is not None:
        for path in paths:
            from pydicom import dcmread

            patient_id = dcmread(path, stop_before_pixels=True).get("PatientID", "")
            Patient.objects.filter(patient_id=patient_id).update(user=owner)


def pydicom_file(name: str) -> Path:
    return Path(pydicom.data.get_testdata_file(name))  # type: ignore[arg-type]


@pytest.fixture
def paula_study(ct_study, paula) -> tuple[str, list[Path]]:
    """paula's CT study, stored and linked to her account."""
    study_uid, paths = ct_study
    store(paths, paula)
    return study_uid, paths


@pytest.fixture
def charlie_study(other_study, charlie) -> tuple[str, list[Path]]:
    study_uid, paths = other_study
    store(paths, charlie)
    return study_uid, paths


def session_for(user: User) -> requests.Session:
    """A requests session carrying ``user``'s portal session cookie."""
    client = Client()
    client.force_login(user)
    session = requests.Session()
    session.cookies.set("sessionid", client.cookies["sessionid"].value)
    return session


def boundary_of(content_type: str) -> bytes:
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.lower() == "boundary":
            return value.strip('"').encode()
    raise AssertionError(f"no boundary in {content_type}")


def parse_multipart(content_type: str, body: bytes) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart/related body as (headers, payload), strictly: every part
    opens with ``--boundary CRLF``, headers end with a blank line, the body closes with
    ``--boundary--``."""
    assert content_type.startswith("multipart/related"), content_type
    boundary = boundary_of(content_type)
    assert body.startswith(b"--" + boundary + b"\r\n"), body[:80]
    pieces = (b"\r\n" + body).split(b"\r\n--" + boundary)
    assert pieces[0] == b""
    assert pieces[-1].startswith(b"--"), pieces[-1][:20]
    parts = []
    for piece in pieces[1:-1]:
        assert piece.startswith(b"\r\n")
        head, sep, payload = piece[2:].partition(b"\r\n\r\n")
        assert sep
        headers = {}
        for line in head.decode("ascii").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            assert int(headers["content-length"]) == len(payload)
        parts.append((headers, payload))
    return parts
