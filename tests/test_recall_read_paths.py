"""Every way an image leaves the archive recalls an evicted object transparently: WADO-RS
(instances over real HTTP, frames), C-GET and C-MOVE with DCMTK's getscu and movescu
against the real listener, the patient's download link and image pages, a share with a
professional, and the patient's data export. Each gets the original bytes from the
replica (moto's real S3 server), and the objects are local again afterwards."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
import requests
from django.core.files.storage import storages
from django.urls import reverse
from pydicom import dcmread

from accounts.models import Consent, Purpose
from audit.trail import Actor
from dimse.testing import dataset_bytes, dcmtk, storescp
from imaging.models import Instance, Patient, Study
from privacy import consent as consents
from privacy import export as exports
from privacy.models import DataExport
from replica.models import Copy
from sharing import services
from tests import replica_support
from tests.http_bodies import body
from tests.replica_support import evict_all, spills, store_replicated
from tests.s3_support import s3_endpoint  # noqa: F401 - a fixture
from tests.wado_support import parse_multipart, session_for

replica = replica_support.replica

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def evicted(replica, paula, ct_study, dicom_storage, django_capture_on_commit_callbacks
            ) -> Study:
    """paula's CT study (12 slices), replicated, verified and evicted from the local tier."""
    stored = store_replicated(ct_study[1], django_capture_on_commit_callbacks)
    Patient.objects.filter(patient_id="PAULA-001").update(user=paula)
    evict_all(stored)
    assert not any((dicom_storage / i.blob_key).exists() for i in stored)
    return Study.objects.get(study_instance_uid=ct_study[0])


def _by_uid(paths: Any) -> dict[str, Path]:
    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): Path(p) for p in paths}


def _originals(ct_study: tuple[str, list[Path]]) -> dict[str, bytes]:
    return {uid: path.read_bytes() for uid, path in _by_uid(ct_study[1]).items()}


def assert_local_again(study: Study, dicom_storage: Path, only: set[str] | None = None) -> None:
    """The study's objects (or only those SOP Instance UIDs) are back on the local tier,
    with their own bytes, marked written; no partial recall is left."""
    instances = Instance.objects.filter(series__study=study)
    if only is not None:
        instances = instances.filter(sop_instance_uid__in=only)
    for instance in instances:
        data = (dicom_storage / instance.blob_key).read_bytes()
        assert hashlib.sha256(data).hexdigest() == instance.sha256
        assert Copy.objects.get(instance=instance, tier=Copy.Tier.LOCAL).state == (
            Copy.State.WRITTEN)
    assert spills(dicom_storage) == []


def _body(response: Any) -> bytes:
    return body(response)


# --- DICOMweb ---------------------------------------------------------------------------------


def test_wado_rs_retrieves_an_evicted_study_byte_for_byte_over_http(
    live_server, evicted, paula, ct_study, dicom_storage
):
    response = session_for(paula).get(
        f"{live_server.url}/dicomweb/studies/{ct_study[0]}", timeout=60,
        headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert response.status_code == 200
    parts = parse_multipart(response.headers["Content-Type"], response.content)
    assert sorted(payload for _, payload in parts) == sorted(_originals(ct_study).values())
    assert_local_again(evicted, dicom_storage)


def test_wado_rs_retrieves_one_evicted_instance(live_server, evicted, paula, ct_study,
                                                dicom_storage):
    uid, path = next(iter(_by_uid(ct_study[1]).items()))
    series = Instance.objects.get(sop_instance_uid=uid).series.series_instance_uid
    response = session_for(paula).get(
        f"{live_server.url}/dicomweb/studies/{ct_study[0]}/series/{series}/instances/{uid}",
        timeout=60, headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert response.status_code == 200
    [(_, payload)] = parse_multipart(response.headers["Content-Type"], response.content)
    assert payload == path.read_bytes()
    assert_local_again(evicted, dicom_storage, only={uid})


def test_wado_rs_frames_of_an_evicted_instance_are_its_pixel_data(
    client, evicted, paula, ct_study, dicom_storage
):
    ds = dcmread(ct_study[1][0])
    client.force_login(paula)
    response = client.get(
        f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/frames/1",
        HTTP_ACCEPT='multipart/related; type="application/octet-stream"')
    assert response.status_code == 200
    [(_, payload)] = parse_multipart(response["Content-Type"], _body(response))
    assert payload == ds.PixelData
    assert_local_again(evicted, dicom_storage, only={str(ds.SOPInstanceUID)})


# --- DIMSE ------------------------------------------------------------------------------------


def test_getscu_gets_an_evicted_study_unchanged(portal, workstation, evicted, ct_study,
                                                tmp_path, dicom_storage):
    out = tmp_path / "got"
    out.mkdir()
    result = dcmtk("getscu", "-aet", "DEST", "-aec", "PORTAL", "-S", "-od", str(out),
                   "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={ct_study[0]}",
                   *portal.address(), cwd=out)
    assert result.returncode == 0, result.stderr
    received, sent = _by_uid(out.iterdir()), _by_uid(ct_study[1])
    assert received.keys() == sent.keys()
    for uid, path in sent.items():
        assert dataset_bytes(received[uid]) == dataset_bytes(path)
    assert_local_again(evicted, dicom_storage)


def test_movescu_moves_an_evicted_study_unchanged(portal, workstation, evicted, ct_study,
                                                  tmp_path, dest_port, dicom_storage):
    with storescp(tmp_path / "dest", port=dest_port):
        result = dcmtk("movescu", "-aet", "DEST", "-aec", "PORTAL", "-aem", "DEST", "-S",
                       "-k", "QueryRetrieveLevel=STUDY", "-k",
                       f"StudyInstanceUID={ct_study[0]}", *portal.address())
    assert result.returncode == 0, result.stderr
    received, sent = _by_uid((tmp_path / "dest").iterdir()), _by_uid(ct_study[1])
    assert received.keys() == sent.keys()
    for uid, path in sent.items():
        assert dataset_bytes(received[uid]) == dataset_bytes(path)
    assert_local_again(evicted, dicom_storage)


# --- The patient's pages, links and shares ----------------------------------------------------


def _dicom_members(data: bytes) -> list[bytes]:
    """Every member of a ZIP that is a DICOM Part 10 file, the DICOMDIR aside."""
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.testzip() is None
    members = (archive.read(n) for n in archive.namelist() if n.split("/")[-1] != "DICOMDIR")
    return [m for m in members if m[128:132] == b"DICM"]


def test_the_patients_download_link_gives_the_evicted_files(client, evicted, paula, ct_study,
                                                           dicom_storage):
    _link, token = services.create_download_link(paula, [evicted],
                                                 actor=Actor.for_user(paula))
    response = client.get(reverse("sharing:public_download", args=[token]))
    assert response.status_code == 200
    assert sorted(_dicom_members(_body(response))) == sorted(_originals(ct_study).values())
    assert_local_again(evicted, dicom_storage)


def test_the_patients_image_page_renders_an_evicted_frame(client, evicted, paula, ct_study,
                                                          dicom_storage):
    uid = next(iter(_by_uid(ct_study[1])))
    client.force_login(paula)
    response = client.get(reverse("patients:frame_image", args=[ct_study[0], uid, 0]))
    assert response.status_code == 200, response.content[:200]
    assert response["Content-Type"] == "image/jpeg"
    content = _body(response) if response.streaming else response.content
    assert content[:2] == b"\xff\xd8"
    assert_local_again(evicted, dicom_storage, only={uid})


def test_a_share_with_a_professional_shows_and_downloads_the_evicted_study(
    evicted, paula, ct_study, dicom_storage, live_server
):
    consents.give(evicted.patient, Purpose.SHARING, consents.CURRENT_TEXT_VERSION,
                  Consent.Channel.PORTAL, paula)
    _share, token = services.share_with_professional(
        paula, evicted, "dr.who@outside.example", actor=Actor.for_user(paula),
        link_url=lambda token: f"{live_server.url}/v/{token}", allow_download=True)
    uid = next(iter(_by_uid(ct_study[1])))
    image = requests.get(f"{live_server.url}/v/{token}/images/{uid}.jpg", timeout=60)
    assert image.status_code == 200 and image.content[:2] == b"\xff\xd8"
    download = requests.get(f"{live_server.url}/v/{token}/download", timeout=60)
    assert download.status_code == 200
    assert sorted(_dicom_members(download.content)) == sorted(_originals(ct_study).values())
    assert_local_again(evicted, dicom_storage)


def test_the_data_export_holds_the_evicted_files(evicted, paula, ct_study, dicom_storage):
    export = exports.request_export(evicted.patient, paula)  # built once this commits
    export.refresh_from_db()
    assert export.status == DataExport.Status.READY, export.error
    with storages["default"].open(export.file_key, "rb") as fp:
        data = fp.read()
    assert sorted(_dicom_members(data)) == sorted(_originals(ct_study).values())
    assert_local_again(evicted, dicom_storage)
