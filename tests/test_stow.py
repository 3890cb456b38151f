"""STOW-RS: instances sent over HTTP go through the one ingest path; one bad part does not
fail the batch; the answer is the PS3.18 store response with 200, 202 or 409."""

from __future__ import annotations

import hashlib
import io
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from django.db import connection
from pydicom import dcmread

from audit.models import AuditAction, AuditEvent
from dicomweb import stow
from dicomweb.multipart import MultipartError, iter_parts
from imaging import blobs
from imaging.models import Instance, Series, Study
from tests.conftest import PASSWORD

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = pytest.mark.django_db(transaction=True)

BOUNDARY = "stow-boundary-7f3a"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def multipart(parts: list[bytes], content_types: list[str] | None = None) -> bytes:
    body = io.BytesIO()
    for index, part in enumerate(parts):
        kind = content_types[index] if content_types else "application/dicom"
        body.write(f"--{BOUNDARY}\r\nContent-Type: {kind}\r\n\r\n".encode())
        body.write(part)
        body.write(b"\r\n")
    body.write(f"--{BOUNDARY}--\r\n".encode())
    return body.getvalue()


def post(url: str, body, *, user: str = "tina", content_type: str = CONTENT_TYPE,
         **kwargs) -> requests.Response:
    return requests.post(url, data=body, auth=(user, PASSWORD), timeout=120,
                         headers={"Content-Type": content_type, **kwargs.pop("headers", {})},
                         **kwargs)


def studies_url(live_server, study: str | None = None) -> str:
    return f"{live_server.url}/dicomweb/studies" + (f"/{study}" if study else "")


def items(response: requests.Response, tag: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = response.json().get(tag, {}).get("Value", [])
    return found


def stored_bytes(sop_uid: str) -> bytes:
    instance = Instance.objects.get(sop_instance_uid=sop_uid)
    with blobs.open_blob(instance.blob_key) as fp:
        return fp.read()


def test_dicomweb_client_stores_a_study(live_server, tina, ct_study):
    study_uid, paths = ct_study
    session = requests.Session()
    session.auth = ("tina", PASSWORD)
    client = DICOMwebClient(url=f"{live_server.url}/dicomweb", session=session)
    result = client.store_instances(datasets=[dcmread(p) for p in paths])
    assert len(result.ReferencedSOPSequence) == 12
    assert "FailedSOPSequence" not in result
    assert Instance.objects.count() == 12
    study = Study.objects.get(study_instance_uid=study_uid)
    assert (study.num_series, study.num_instances, study.modalities) == (2, 12, "CT")
    # One entry per study stored into, naming every instance.
    (entry,) = AuditEvent.objects.filter(action=AuditAction.STORE, username="tina")
    assert entry.study_uid == study_uid and entry.detail["instances"] == 12
    assert sorted(entry.detail["stored"]) == sorted(
        str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths)


def test_a_bad_part_among_good_ones_gives_202_and_the_good_ones_are_stored_unchanged(
    live_server, tina, ct_study
):
    study_uid, paths = ct_study
    good = [p.read_bytes() for p in paths[:3]]
    response = post(studies_url(live_server), multipart([good[0], b"not DICOM", *good[1:]]))
    assert response.status_code == 202
    assert response.headers["Content-Type"].startswith("application/dicom+json")
    failed = items(response, "00081198")
    assert len(failed) == 1
    assert failed[0]["00081197"]["Value"] == [stow.CANNOT_UNDERSTAND]
    assert "not a DICOM file" in failed[0]["00000902"]["Value"][0]
    referenced = items(response, "00081199")
    assert len(referenced) == 3
    for item, data in zip(referenced, good, strict=True):
        sop_uid = item["00081155"]["Value"][0]
        assert item["00081150"]["Value"] == [dcmread(io.BytesIO(data)).SOPClassUID]
        assert f"/studies/{study_uid}/series/" in item["00081190"]["Value"][0]
        assert stored_bytes(sop_uid) == data
        assert Instance.objects.get(sop_instance_uid=sop_uid).sha256 == hashlib.sha256(
            data).hexdigest()
    assert response.json()["00081190"]["Value"] == [studies_url(live_server, study_uid)]


def test_only_bad_parts_give_409(live_server, tina):
    response = post(studies_url(live_server), multipart([b"junk", b"\x00" * 200]))
    assert response.status_code == 409
    assert len(items(response, "00081198")) == 2
    assert "00081199" not in response.json()
    assert Instance.objects.count() == 0


def test_a_part_of_the_wrong_type_is_refused_and_the_rest_stored(live_server, tina, ct_study):
    good = ct_study[1][0].read_bytes()
    body = multipart([good, b"{}"], ["application/dicom", "application/dicom+json"])
    response = post(studies_url(live_server), body)
    assert response.status_code == 202
    assert "application/dicom+json" in items(response, "00081198")[0]["00000902"]["Value"][0]


def test_the_same_instance_again_is_success_and_other_bytes_under_its_uid_are_refused(
    live_server, tina, ct_study
):
    path = ct_study[1][0]
    data = path.read_bytes()
    assert post(studies_url(live_server), multipart([data])).status_code == 200
    again = post(studies_url(live_server), multipart([data]))
    assert again.status_code == 200
    ds = dcmread(path)
    ds.StudyDescription = "changed"
    changed = io.BytesIO()
    ds.save_as(changed, enforce_file_format=True)
    conflict = post(studies_url(live_server), multipart([changed.getvalue()]))
    assert conflict.status_code == 409
    assert items(conflict, "00081198")[0]["00081197"]["Value"] == [
        stow.DUPLICATE_SOP_INSTANCE]
    assert stored_bytes(ds.SOPInstanceUID) == data


def test_an_empty_body_is_400(live_server, tina):
    response = post(studies_url(live_server), b"")
    assert response.status_code == 400
    assert "empty" in response.json()["error"]
    closing_only = post(studies_url(live_server), f"--{BOUNDARY}--\r\n".encode())
    assert closing_only.status_code == 400


@pytest.mark.parametrize("content_type", [
    "application/dicom",
    'multipart/related; type="application/dicom+json"; boundary=x',
    'multipart/related; type="application/dicom+xml"; boundary=x',
    "application/octet-stream",
])
def test_a_wrong_content_type_is_415_with_a_message(live_server, tina, ct_study,
                                                     content_type):
    response = post(studies_url(live_server), ct_study[1][0].read_bytes(),
                    content_type=content_type)
    assert response.status_code == 415
    assert "application/dicom" in response.json()["error"]


def test_instances_of_another_study_than_the_url_are_refused(live_server, tina, ct_study,
                                                            other_study):
    study_uid, paths = ct_study
    body = multipart([paths[0].read_bytes(), other_study[1][0].read_bytes()])
    response = post(studies_url(live_server, study_uid), body)
    assert response.status_code == 202
    failed = items(response, "00081198")
    assert len(failed) == 1
    assert failed[0]["00081197"]["Value"] == [stow.DATASET_DOES_NOT_MATCH]
    assert failed[0]["00081155"]["Value"] == [dcmread(other_study[1][0]).SOPInstanceUID]
    assert not Study.objects.filter(study_instance_uid=other_study[0]).exists()
    only_wrong = post(studies_url(live_server, study_uid),
                      multipart([other_study[1][1].read_bytes()]))
    assert only_wrong.status_code == 409


def test_doctors_may_not_store_images_and_patients_may_not_store(live_server, dora, paula,
                                                                 ct_study):
    body = multipart([ct_study[1][0].read_bytes()])
    # A doctor may add reports to studies she reads (test_doctor_adds_reports), no image.
    refused = post(studies_url(live_server), body, user="dora")
    assert refused.status_code == 409
    assert items(refused, "00081198")[0]["00081197"]["Value"] == [stow.NOT_AUTHORIZED]
    assert post(studies_url(live_server), body, user="paula").status_code == 403
    assert Instance.objects.count() == 0
    assert AuditEvent.objects.filter(action=AuditAction.STORE, outcome="denied").count() == 2


def test_a_truncated_body_keeps_the_parts_that_arrived_whole(live_server, tina, ct_study):
    paths = ct_study[1]
    body = multipart([p.read_bytes() for p in paths[:2]])
    cut = body[: len(body) - 1000]
    response = post(studies_url(live_server), cut)
    assert response.status_code == 202
    assert len(items(response, "00081199")) == 1
    assert "truncated" in items(response, "00081198")[0]["00000902"]["Value"][0]


# --- the body as a stream ---------------------------------------------------------------


def odd_pieces(data: bytes, seed: int = 7) -> Iterator[bytes]:
    """1..7-byte pieces, and every occurrence of the boundary cut in the middle."""
    rng = random.Random(seed)
    cuts = {i + len(BOUNDARY) // 2 for i in range(len(data)) if data.startswith(
        BOUNDARY.encode(), i)}
    start = 0
    while start < len(data):
        end = min(start + rng.randint(1, 7), len(data))
        for cut in sorted(cuts):
            if start < cut < end:
                end = cut
                break
        yield data[start:end]
        start = end


class PieceReader:
    def __init__(self, pieces: Iterator[bytes]) -> None:
        self.pieces = pieces

    def read(self, n: int) -> bytes:
        return next(self.pieces, b"")


def test_the_parser_finds_boundaries_split_across_reads(ct_study):
    parts = [p.read_bytes() for p in ct_study[1][:3]] + [b"", b"\r\n--" + b"x" * 10]
    body = b"preamble\r\n" + multipart(parts) + b"epilogue"
    found = [p.file.read() for p in iter_parts(PieceReader(odd_pieces(body)).read, BOUNDARY)]
    assert found == parts


def test_the_parser_refuses_a_body_without_a_delimiter():
    with pytest.raises(MultipartError):
        list(iter_parts(io.BytesIO(b"just bytes").read, BOUNDARY))


def test_a_body_sent_in_odd_small_pieces_is_stored(live_server, tina, ct_study):
    data = [p.read_bytes() for p in ct_study[1][:4]]
    body = multipart(data)
    request = requests.Request(
        "POST", studies_url(live_server), data=odd_pieces(body), auth=("tina", PASSWORD),
        headers={"Content-Type": CONTENT_TYPE, "Content-Length": str(len(body))},
    ).prepare()
    request.headers.pop("Transfer-Encoding", None)
    response = requests.Session().send(request, timeout=120)
    assert response.status_code == 200, response.text
    assert [stored_bytes(i["00081155"]["Value"][0]) for i in items(response, "00081199")] \
        == data


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def gunicorn_server(transactional_db, dicom_storage: Path) -> Iterator[str]:
    """The portal under gunicorn, which de-chunks request bodies (the dev server cannot)."""
    settings_dict = connection.settings_dict
    if connection.vendor == "postgresql":
        url = (f"postgres://{settings_dict['USER']}@{settings_dict['HOST']}:"
               f"{settings_dict['PORT']}/{settings_dict['NAME']}")
    else:
        url = f"sqlite:///{settings_dict['NAME']}"
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": url, "DICOM_STORAGE_DIR": str(dicom_storage),
           "REQUIRE_2FA": "false", "DATABASE_CONN_MAX_AGE": "0"}
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "portal.wsgi", "-b",
         f"127.0.0.1:{port}", "-w", "1", "--threads", "2", "--log-level", "warning"],
        env=env, cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_chunked_body_in_odd_pieces_is_stored(gunicorn_server, tina, ct_study):
    data = [p.read_bytes() for p in ct_study[1][:4]]
    response = requests.post(
        f"{gunicorn_server}/dicomweb/studies", data=odd_pieces(multipart(data)),
        auth=("tina", PASSWORD), headers={"Content-Type": CONTENT_TYPE}, timeout=120,
    )
    assert response.request.headers["Transfer-Encoding"] == "chunked"
    assert response.status_code == 200, response.text
    assert [stored_bytes(i["00081155"]["Value"][0]) for i in items(response, "00081199")] \
        == data


@pytest.mark.postgres
def test_concurrent_clients_storing_overlapping_sets_end_with_exact_counts(
    live_server, tina, ct_study
):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (DATABASE_URL)")
    study_uid, paths = ct_study
    data = [p.read_bytes() for p in paths]
    statuses: list[int] = []

    def client(offset: int) -> None:
        chosen = [data[(offset + i) % len(data)] for i in range(8)]
        for piece in (chosen[:4], chosen[4:]):
            statuses.append(post(studies_url(live_server), multipart(piece)).status_code)

    threads = [threading.Thread(target=client, args=(k * 3,)) for k in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 12
    assert Instance.objects.count() == 12
    study = Study.objects.get(study_instance_uid=study_uid)
    assert (study.num_series, study.num_instances, study.modalities) == (2, 12, "CT")
    assert sorted(Series.objects.values_list("num_instances", flat=True)) == [6, 6]
    assert len(list(blobs.storage().listdir("")[0])) > 0
