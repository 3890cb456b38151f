"""A transcoded instance is kept for the next client (issue 13).

An instance asked in a transfer syntax other than its own is transcoded once into the
frame cache's directory, keyed by the stored object's SHA-256 and the target syntax, and
streamed from there; the next request streams the same file with no transcode. The stored
object is never changed, the copy goes when the object is deleted, and copies count
against the cache's one size limit.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import time

import pytest
from pydicom import dcmread
from pydicom.uid import (
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEGLSLossless,
    RLELossless,
)

from dicomweb import frame_codecs
from dicomweb import frames as pixels
from imaging import blobs
from imaging.models import Instance
from tests.http_bodies import body
from tests.wado_support import parse_multipart, pydicom_file, store

pytestmark = pytest.mark.django_db

DICOM_PARTS = 'multipart/related; type="application/dicom"'


@pytest.fixture
def mr(client, alice) -> Instance:
    """pydicom's MR_small (native), stored; alice signed in."""
    store([pydicom_file("MR_small.dcm")])
    client.force_login(alice)
    return Instance.objects.get()


def _url(instance: Instance) -> str:
    return (f"/dicomweb/studies/{instance.series.study.study_instance_uid}"
            f"/series/{instance.series.series_instance_uid}"
            f"/instances/{instance.sop_instance_uid}")


def _retrieve(client, instance: Instance, syntax: str) -> bytes:
    response = client.get(_url(instance), HTTP_ACCEPT=f"{DICOM_PARTS}; transfer-syntax={syntax}")
    assert response.status_code == 200
    assert response.streaming
    [(headers, part)] = parse_multipart(response["Content-Type"], body(response))
    assert headers["content-type"] == f"application/dicom; transfer-syntax={syntax}"
    return part


@pytest.fixture
def no_transcode(monkeypatch):
    def refuse(*args: object) -> None:
        raise AssertionError("transcoded again")

    return lambda: monkeypatch.setattr(pixels, "transcode", refuse)


def test_a_second_request_streams_the_kept_copy_without_transcoding(client, mr, settings,
                                                                    no_transcode):
    first = _retrieve(client, mr, JPEGLSLossless)
    kept = frame_codecs.cache().object_path(mr.sha256, JPEGLSLossless)
    assert kept.parent.parent == settings.WADO_FRAME_CACHE_DIR
    assert kept.read_bytes() == first
    no_transcode()
    assert _retrieve(client, mr, JPEGLSLossless) == first


def test_the_kept_copy_is_the_transcoded_object_and_the_stored_one_is_unchanged(client, mr):
    part = _retrieve(client, mr, RLELossless)
    copy = dcmread(frame_codecs.cache().object_path(mr.sha256, RLELossless))
    assert copy.file_meta.TransferSyntaxUID == RLELossless
    assert copy.SOPInstanceUID == mr.sop_instance_uid
    assert (copy.pixel_array == dcmread(pydicom_file("MR_small.dcm")).pixel_array).all()
    with blobs.open_blob(mr.blob_key) as fp:
        assert hashlib.sha256(fp.read()).hexdigest() == mr.sha256
    assert part == frame_codecs.cache().object_path(mr.sha256, RLELossless).read_bytes()


def test_each_target_syntax_is_its_own_copy(client, mr):
    jpeg_ls = _retrieve(client, mr, JPEGLSLossless)
    rle = _retrieve(client, mr, RLELossless)
    assert jpeg_ls != rle
    assert frame_codecs.cache().object_path(mr.sha256, RLELossless).read_bytes() == rle


def test_a_compressed_object_asked_by_default_is_decompressed_once(client, alice,
                                                                   no_transcode):
    """No ``transfer-syntax``: Explicit VR Little Endian, the PS3.18 default, made from a
    JPEG-LS object once."""
    store([pydicom_file("MR_small_jpeg_ls_lossless.dcm")])
    client.force_login(alice)
    instance = Instance.objects.get()
    first = client.get(_url(instance), HTTP_ACCEPT=DICOM_PARTS)
    [(_, part)] = parse_multipart(first["Content-Type"], body(first))
    assert dcmread(frame_codecs.cache().object_path(
        instance.sha256, ExplicitVRLittleEndian)).file_meta.TransferSyntaxUID == (
        ExplicitVRLittleEndian)
    no_transcode()
    again = client.get(_url(instance), HTTP_ACCEPT=DICOM_PARTS)
    assert parse_multipart(again["Content-Type"], body(again))[0][1] == part


def test_a_deleted_objects_copies_leave_the_cache(client, mr,
                                                 django_capture_on_commit_callbacks):
    _retrieve(client, mr, JPEGLSLossless)
    kept = frame_codecs.cache().object_path(mr.sha256, JPEGLSLossless)
    assert kept.is_file()
    with django_capture_on_commit_callbacks(execute=True):
        Instance.objects.filter(pk=mr.pk).delete()
    assert not kept.exists()


def test_copies_keep_the_cache_within_its_limit_by_dropping_the_oldest(client, mr,
                                                                      settings):
    """MR_small is about 9.8 KB in Implicit VR and 7.8 KB as RLE: each fits in 15 KB, the
    two together do not, so the older copy goes when the newer one is kept."""
    settings.WADO_FRAME_CACHE_BYTES = 15_000
    _retrieve(client, mr, ImplicitVRLittleEndian)
    older = frame_codecs.cache().object_path(mr.sha256, ImplicitVRLittleEndian)
    os.utime(older, (time.time() - 60, time.time() - 60))
    newer = _retrieve(client, mr, RLELossless)
    entries = [p for p in settings.WADO_FRAME_CACHE_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in entries) <= 15_000
    assert entries == [frame_codecs.cache().object_path(mr.sha256, RLELossless)]
    assert entries[0].read_bytes() == newer  # no temporary file left beside it either


def test_with_the_cache_off_an_instance_is_still_transcoded(client, mr, settings):
    settings.WADO_FRAME_CACHE_BYTES = 0
    part = _retrieve(client, mr, JPEGLSLossless)
    assert dcmread(io.BytesIO(part)).file_meta.TransferSyntaxUID == JPEGLSLossless
    assert not list(settings.WADO_FRAME_CACHE_DIR.rglob("*-object-*"))


def test_a_full_cache_disk_still_answers_from_a_temporary_copy(client, mr, settings,
                                                               monkeypatch):
    real = pixels.transcode
    cache_dir = str(settings.WADO_FRAME_CACHE_DIR)

    def disk_full_in_the_cache(fp, target, out):
        if str(getattr(out, "name", "") or "").startswith(cache_dir):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fp, target, out)

    monkeypatch.setattr(pixels, "transcode", disk_full_in_the_cache)
    part = _retrieve(client, mr, JPEGLSLossless)
    assert dcmread(io.BytesIO(part)).file_meta.TransferSyntaxUID == JPEGLSLossless
    assert not [p for p in settings.WADO_FRAME_CACHE_DIR.rglob("*") if p.is_file()]


@pytest.mark.parametrize("syntax", [HTJ2KLossless, HTJ2KLosslessRPCL])
def test_an_instance_asked_in_htj2k_lossless_decodes_to_the_stored_pixels(client, mr, syntax):
    part = _retrieve(client, mr, syntax)
    copy = dcmread(io.BytesIO(part))
    assert copy.file_meta.TransferSyntaxUID == syntax
    assert copy.SOPInstanceUID == mr.sop_instance_uid
    assert (copy.pixel_array == dcmread(pydicom_file("MR_small.dcm")).pixel_array).all()
    assert frame_codecs.cache().object_path(mr.sha256, syntax).read_bytes() == part


def test_a_colour_instance_in_htj2k_lossless_stays_rgb_and_decodes_to_its_pixels(client,
                                                                                 alice):
    path = pydicom_file("SC_rgb_small_odd.dcm")
    store([path])
    client.force_login(alice)
    copy = dcmread(io.BytesIO(_retrieve(client, Instance.objects.get(), HTJ2KLossless)))
    assert copy.file_meta.TransferSyntaxUID == HTJ2KLossless
    assert copy.PhotometricInterpretation == "RGB"
    assert (copy.pixel_array == dcmread(path).pixel_array).all()
