"""The same object stored through STOW-RS and C-STORE, one after the other or at the same
moment, is a duplicate: every sender is answered success, and it is stored once.

The two ways in write different File Meta in front of the same dataset (pynetdicom writes
its own implementation UID; a STOW part keeps the sender's), so "the same object" is the
same dataset in the same transfer syntax, not the same file.
"""

from __future__ import annotations

import io
import random
import threading
from pathlib import Path

import pytest
import requests
from django.conf import settings

from dimse.models import Peer
from dimse.testing import RunningListener, dcmtk
from imaging.models import Instance
from tests.conftest import PASSWORD, ingest_paths, stored_files

pytestmark = pytest.mark.django_db(transaction=True)

BOUNDARY = "same-instance-boundary"


@pytest.fixture
def modality(transactional_db) -> Peer:
    return Peer.objects.create(ae_title="MODALITY", host="127.0.0.1", may_store=True)


def _storescu(portal: RunningListener, paths: list[Path]) -> str:
    """Send with storescu, not stopping at a failed C-STORE; returns its log."""
    result = dcmtk("storescu", "-v", "--no-halt", "-aet", "MODALITY", "-aec", portal.ae_title,
                   *portal.address(), *map(str, paths))
    assert result.returncode == 0, result.stderr
    return result.stderr


def _stow(live_server: object, paths: list[Path]) -> requests.Response:
    body = io.BytesIO()
    for path in paths:
        body.write(f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        body.write(path.read_bytes())
        body.write(b"\r\n")
    body.write(f"--{BOUNDARY}--\r\n".encode())
    return requests.post(
        f"{live_server.url}/dicomweb/studies",  # type: ignore[attr-defined]
        data=body.getvalue(), auth=("tina", PASSWORD), timeout=120,
        headers={"Content-Type":
                 f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'},
    )


def _every_store_response_succeeded(log: str, count: int) -> bool:
    return log.count("Received Store Response (Success)") == count


def _stored_once(paths: list[Path], dicom_storage: Path) -> None:
    assert Instance.objects.count() == len(paths)
    assert len(stored_files(dicom_storage)) == len(paths)  # one blob each, none orphaned
    assert sorted(Instance.objects.values_list("blob_key", flat=True)) == sorted(
        str(p.relative_to(dicom_storage)) for p in stored_files(dicom_storage))
    spool = Path(settings.DICOM_SPOOL_DIR)
    assert not [p for p in spool.rglob("*") if p.is_file()]  # nothing set aside


def test_an_object_stored_by_stow_then_sent_by_storescu_is_a_duplicate(
    portal, modality, tina, ct_study, dicom_storage,
):
    _, paths = ct_study
    ingest_paths(paths)
    log = _storescu(portal, paths)
    portal.wait_idle()
    assert _every_store_response_succeeded(log, len(paths)), log
    _stored_once(paths, dicom_storage)


def test_an_object_sent_by_storescu_then_by_stow_is_a_duplicate(
    portal, modality, tina, live_server, ct_study, dicom_storage,
):
    _, paths = ct_study
    _storescu(portal, paths)
    portal.wait_idle()
    response = _stow(live_server, paths)
    assert response.status_code == 200, response.text
    assert "00081198" not in response.json()  # no FailedSOPSequence
    _stored_once(paths, dicom_storage)


def test_the_same_objects_through_stow_and_storescu_at_the_same_moment_are_stored_once(
    portal, modality, tina, live_server, ct_study, dicom_storage,
):
    """Two storescu associations and two STOW-RS clients send the same study at once, each
    in its own order, so that their duplicate checks and index rows interleave."""
    _, paths = ct_study
    logs: list[str] = []
    responses: list[requests.Response] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def shuffled(seed: int) -> list[Path]:
        order = list(paths)
        random.Random(seed).shuffle(order)
        return order

    def by_storescu(seed: int) -> None:
        try:
            start.wait()
            logs.append(_storescu(portal, shuffled(seed)))
        except BaseException as exc:
            errors.append(exc)

    def by_stow(seed: int) -> None:
        try:
            start.wait()
            order = shuffled(seed)
            for half in (order[:6], order[6:]):
                responses.append(_stow(live_server, half))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=by_storescu, args=(1,)),
               threading.Thread(target=by_storescu, args=(2,)),
               threading.Thread(target=by_stow, args=(3,)),
               threading.Thread(target=by_stow, args=(4,))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    portal.wait_idle()
    assert not errors
    assert len(logs) == 2
    for log in logs:
        assert _every_store_response_succeeded(log, len(paths)), log
    assert len(responses) == 4
    for response in responses:
        assert response.status_code == 200, response.text
        assert "00081198" not in response.json()
    _stored_once(paths, dicom_storage)
