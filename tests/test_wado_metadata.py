"""WADO-RS metadata at study, series and instance level, from the index alone.

BulkDataURIs come back absolute, built from the request (so a reverse proxy's
X-Forwarded-Host and -Proto are respected when Django is told to trust them), and each one
resolves to the exact bytes of the value in the stored file.
"""

from __future__ import annotations

import gzip
import json
from typing import Any
from urllib.parse import urlsplit

import pytest
from pydicom import dcmread

from audit.models import AuditAction, AuditEvent
from imaging import blobs
from imaging.models import Instance
from tests import wado_support
from tests.wado_support import parse_multipart

paula_study = wado_support.paula_study
charlie_study = wado_support.charlie_study

pytestmark = pytest.mark.django_db

PIXEL_DATA = "7FE00010"


def _body(response) -> bytes:
    return b"".join(response.streaming_content)


def _metadata(client, path: str, **headers) -> Any:
    response = client.get(f"/dicomweb/{path}/metadata", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("application/dicom+json")
    return json.loads(_body(response))


def _uids(study_uid: str) -> list[tuple[str, str]]:
    return list(Instance.objects.filter(series__study__study_instance_uid=study_uid)
                .order_by("series__series_number", "instance_number")
                .values_list("series__series_instance_uid", "sop_instance_uid"))


def test_metadata_at_every_level(client, paula_study, paula):
    study_uid, paths = paula_study
    client.force_login(paula)
    study = _metadata(client, f"studies/{study_uid}")
    assert len(study) == len(paths)
    assert [m["00080018"]["Value"][0] for m in study] == [sop for _, sop in _uids(study_uid)]
    series_uid, sop_uid = _uids(study_uid)[0]
    series = _metadata(client, f"studies/{study_uid}/series/{series_uid}")
    assert len(series) == len(paths) // 2
    assert {m["0020000E"]["Value"][0] for m in series} == {series_uid}
    [instance] = _metadata(client, f"studies/{study_uid}/series/{series_uid}/instances/{sop_uid}")
    assert instance["00080018"] == {"vr": "UI", "Value": [sop_uid]}
    assert instance["00100010"]["Value"][0]["Alphabetic"] == "Pereira^Paula"
    assert instance["00280010"] == {"vr": "US", "Value": [128]}


def test_metadata_never_opens_a_file(client, paula_study, paula, dicom_storage):
    study_uid, _ = paula_study
    client.force_login(paula)
    for path in dicom_storage.rglob("*.dcm"):
        path.unlink()
    assert len(_metadata(client, f"studies/{study_uid}")) == 12


def test_bulk_data_uris_are_absolute_and_give_the_exact_pixel_bytes(client, paula_study, paula):
    study_uid, paths = paula_study
    client.force_login(paula)
    series_uid, sop_uid = _uids(study_uid)[0]
    [instance] = _metadata(client, f"studies/{study_uid}/series/{series_uid}/instances/{sop_uid}")
    uri = instance[PIXEL_DATA]["BulkDataURI"]
    assert instance[PIXEL_DATA]["vr"] == "OW"
    assert uri == (f"http://testserver/dicomweb/studies/{study_uid}/series/{series_uid}"
                   f"/instances/{sop_uid}/bulkdata/{PIXEL_DATA}")
    response = client.get(urlsplit(uri).path)
    assert response.status_code == 200
    [(headers, payload)] = parse_multipart(response["Content-Type"], _body(response))
    assert headers["content-type"] == "application/octet-stream"
    original = next(p for p in paths if dcmread(p).SOPInstanceUID == sop_uid)
    assert payload == dcmread(original).PixelData


def test_bulk_data_single_part_and_byte_ranges(client, paula_study, paula):
    study_uid, paths = paula_study
    client.force_login(paula)
    series_uid, sop_uid = _uids(study_uid)[0]
    url = (f"/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
           f"/bulkdata/{PIXEL_DATA}")
    pixels = dcmread(next(p for p in paths if dcmread(p).SOPInstanceUID == sop_uid)).PixelData
    whole = client.get(url, HTTP_ACCEPT="application/octet-stream")
    assert whole["Content-Type"] == "application/octet-stream"
    assert _body(whole) == pixels
    part = client.get(url, HTTP_ACCEPT="application/octet-stream", HTTP_RANGE="bytes=100-199")
    assert part.status_code == 206
    assert part["Content-Range"] == f"bytes 100-199/{len(pixels)}"
    assert _body(part) == pixels[100:200]


def test_every_bulk_data_uri_of_a_file_with_overlays_resolves(client, alice):
    path = wado_support.pydicom_file("examples_overlay.dcm")
    wado_support.store([path])
    ds = dcmread(path)
    client.force_login(alice)
    [meta] = _metadata(client, f"studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                       f"/instances/{ds.SOPInstanceUID}")
    uris = {tag: v["BulkDataURI"] for tag, v in meta.items() if "BulkDataURI" in v}
    assert uris
    for tag, uri in uris.items():
        response = client.get(urlsplit(uri).path, HTTP_ACCEPT="application/octet-stream")
        assert response.status_code == 200, (tag, response.content)
        if tag != PIXEL_DATA:
            assert _body(response) == bytes(ds[int(tag, 16)].value)


def test_behind_a_proxy_the_forwarded_host_and_scheme_are_used(client, paula_study, paula,
                                                               settings):
    settings.USE_X_FORWARDED_HOST = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.ALLOWED_HOSTS = ["testserver", "pacs.clinic.example"]
    study_uid, _ = paula_study
    client.force_login(paula)
    study = _metadata(client, f"studies/{study_uid}",
                      HTTP_X_FORWARDED_HOST="pacs.clinic.example", HTTP_X_FORWARDED_PROTO="https")
    assert study[0][PIXEL_DATA]["BulkDataURI"].startswith(
        f"https://pacs.clinic.example/dicomweb/studies/{study_uid}/series/")


def test_gzip_when_the_client_accepts_it(client, paula_study, paula):
    study_uid, _ = paula_study
    client.force_login(paula)
    plain = client.get(f"/dicomweb/studies/{study_uid}/metadata")
    zipped = client.get(f"/dicomweb/studies/{study_uid}/metadata",
                        HTTP_ACCEPT_ENCODING="gzip, deflate, br")
    assert "Content-Encoding" not in plain
    assert zipped["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in zipped["Vary"]
    compressed = _body(zipped)
    assert gzip.decompress(compressed) == _body(plain)
    assert len(compressed) < len(gzip.decompress(compressed)) / 4


def test_ohif_combined_accept_header(client, paula_study, paula):
    study_uid, _ = paula_study
    client.force_login(paula)
    series_uid, _ = _uids(study_uid)[0]
    response = client.get(f"/dicomweb/studies/{study_uid}/series/{series_uid}/metadata",
                          HTTP_ACCEPT="application/dicom+json, application/json, */*; q=0.1")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/dicom+json")


def test_xml_metadata_is_406(client, paula_study, paula):
    study_uid, _ = paula_study
    client.force_login(paula)
    response = client.get(f"/dicomweb/studies/{study_uid}/metadata",
                          HTTP_ACCEPT='multipart/related; type="application/dicom+xml"')
    assert response.status_code == 406


def test_outsiders_and_unknown_uids_get_404_and_are_audited(client, paula_study, charlie):
    study_uid, _ = paula_study
    client.force_login(charlie)
    assert client.get(f"/dicomweb/studies/{study_uid}/metadata").status_code == 404
    assert client.get("/dicomweb/studies/1.2.3/metadata").status_code == 404
    outcomes = set(AuditEvent.objects.filter(action=AuditAction.RETRIEVE, username="charlie")
                   .values_list("outcome", flat=True))
    assert outcomes == {"denied", "failed"}


def test_instance_metadata_under_the_wrong_series_is_404(client, paula_study, alice):
    study_uid, _ = paula_study
    client.force_login(alice)
    (series_a, _), (series_b, sop_b) = _uids(study_uid)[0], _uids(study_uid)[-1]
    assert series_a != series_b
    url = f"/dicomweb/studies/{study_uid}/series/{series_a}/instances/{sop_b}/metadata"
    assert client.get(url).status_code == 404


def test_stored_blob_key_is_not_in_the_metadata(client, paula_study, paula):
    study_uid, _ = paula_study
    client.force_login(paula)
    text = json.dumps(_metadata(client, f"studies/{study_uid}"))
    key = Instance.objects.values_list("blob_key", flat=True).first()
    assert key and key not in text
    assert blobs.storage().exists(key)
