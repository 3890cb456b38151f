"""Download links: a patient or the clinic makes a signed, expiring, revocable link; whoever
holds it downloads the exams as a ZIP that works like the clinic's CD (original files, a
DICOMDIR, README.TXT and INDEX.HTM), streamed and resumable. Refusals are clear pages, and
one patient never reaches another's exams."""

from __future__ import annotations

import datetime
import io
import subprocess
import threading
import tracemalloc
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import requests
from django.core.cache import cache
from django.db import connection
from django.http import StreamingHttpResponse
from django.urls import reverse
from django.utils import timezone
from pydicom.fileset import FileSet

from audit.models import AuditAction, AuditEvent, Outcome
from audit.trail import Actor
from imaging import blobs
from imaging.models import Instance, Patient, Study
from imaging.synthetic import PatientSpec, SeriesSpec, write_study
from sharing import services, zipstream
from sharing.models import DownloadLink

from .conftest import ingest_paths


def make_link(user, studies, **kwargs) -> tuple[DownloadLink, str]:
    return services.create_download_link(user, studies, actor=Actor.for_user(user), **kwargs)


def body(response) -> bytes:
    if isinstance(response, StreamingHttpResponse):
        return b"".join(cast(Iterator[bytes], response.streaming_content))
    return bytes(response.content)


def download_url(token: str) -> str:
    return reverse("sharing:public_download", args=[token])


def events(action: str, **filters) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action, **filters).order_by("seq"))


# --- Making links ---------------------------------------------------------------------------


def test_paula_creates_a_link_for_her_study_and_sees_it_once(client, paula, paulas_study):
    client.force_login(paula)
    response = client.post(reverse("sharing:link_new"), {
        "study": paulas_study.study_instance_uid, "days": "7", "max_uses": "3", "pin": "",
    })
    assert response.status_code == 200
    link = DownloadLink.objects.get()
    assert list(link.studies.all()) == [paulas_study]
    assert link.max_uses == 3
    assert timezone.now() + datetime.timedelta(days=6) < link.expires
    url = response.context["url"]
    assert "/s/" in url
    token = url.rsplit("/s/", 1)[1]
    assert link.token_hash != token and len(link.token_hash) == 64  # only the hash is kept
    assert services.find_link(token) == link
    created = events(AuditAction.SHARE, outcome=Outcome.ALLOWED)
    assert [e.study_uid for e in created] == [paulas_study.study_instance_uid]
    assert created[0].detail["link"] == link.pk


def test_charlie_cannot_create_a_link_for_paulas_study(client, charlie, paulas_study,
                                                       charlies_study):
    client.force_login(charlie)
    for studies in ([paulas_study], [charlies_study, paulas_study]):
        response = client.post(reverse("sharing:link_new"), {
            "study": [s.study_instance_uid for s in studies], "days": "7", "max_uses": "1",
        })
        assert response.status_code == 404
    assert not DownloadLink.objects.exists()
    with pytest.raises(services.NotAllowed):
        make_link(charlie, [paulas_study])
    denied = events(AuditAction.SHARE, outcome=Outcome.DENIED)
    assert denied and {e.study_uid for e in denied} == {paulas_study.study_instance_uid}


def test_a_technician_cannot_share_and_a_doctor_needs_a_grant(tina, dora, paulas_study):
    with pytest.raises(services.NotAllowed):
        make_link(tina, [paulas_study])
    with pytest.raises(services.NotAllowed):
        make_link(dora, [paulas_study])


def test_a_links_values_are_checked(paula, paulas_study):
    with pytest.raises(services.InvalidRequest):
        make_link(paula, [paulas_study], expires_in=datetime.timedelta(days=90))
    with pytest.raises(services.InvalidRequest):
        make_link(paula, [paulas_study], max_uses=0)
    with pytest.raises(services.InvalidRequest):
        make_link(paula, [paulas_study], pin="12ab")


def test_a_link_can_be_mailed_with_the_pin_in_a_separate_message(paula, paulas_study,
                                                                 mailoutbox):
    _link, token = make_link(paula, [paulas_study], pin="4321",
                             recipient_email="paula@example.org",
                            link_url=lambda t: f"https://portal.example/s/{t}")
    assert len(mailoutbox) == 2
    assert f"https://portal.example/s/{token}" in mailoutbox[0].body
    assert "4321" not in mailoutbox[0].body
    assert "4321" in mailoutbox[1].body and token not in mailoutbox[1].body


# --- The ZIP --------------------------------------------------------------------------------


def test_the_link_downloads_the_study_as_pdi_media(client, paula, paulas_study, tmp_path):
    _link, token = make_link(paula, [paulas_study])
    page = client.get(reverse("sharing:public_link", args=[token]))
    assert page.status_code == 200
    assert paulas_study.description in page.content.decode()

    response = client.get(download_url(token))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    data = body(response)
    assert int(response["Content-Length"]) == len(data)
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.testzip() is None
    names = archive.namelist()
    assert names[:3] == ["README.TXT", "INDEX.HTM", "DICOMDIR"]
    for name in names:  # ISO 9660: upper case, components of at most 8 characters
        for part in name.split("/"):
            stem = part.split(".")[0]
            assert part == part.upper() and len(stem) <= 8, name
    assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())

    archive.extractall(tmp_path / "cd")
    fileset = FileSet(tmp_path / "cd" / "DICOMDIR")
    instances = list(Instance.objects.filter(series__study=paulas_study))
    assert len(fileset) == len(instances) == 12
    by_uid = {i.sop_instance_uid: i for i in instances}
    for record in fileset:
        stored = by_uid.pop(record.SOPInstanceUID)
        on_media = Path(record.path).read_bytes()
        assert on_media == b"".join(blobs.iter_chunks(stored.blob_key))
    assert by_uid == {}

    dump = subprocess.run(["dcmdump", str(tmp_path / "cd" / "DICOMDIR")],
                          capture_output=True, text=True, timeout=60)
    assert dump.returncode == 0, dump.stderr
    assert "DirectoryRecordSequence" in dump.stdout
    assert dump.stdout.count("IMAGE") >= 12

    readme = archive.read("README.TXT").decode()
    index = archive.read("INDEX.HTM").decode()
    assert "DICOMDIR" in readme and "Pereira Paula" in readme
    assert "<html" in index and "Pereira Paula" in index and "README.TXT" in index
    assert "CT tórax" in index

    uses = events(AuditAction.DOWNLOAD, outcome=Outcome.ALLOWED)
    assert [e.study_uid for e in uses] == [paulas_study.study_instance_uid]
    assert uses[0].patient_ref.startswith("PAULA-001")


def test_the_zip_is_the_same_on_every_download(client, paula, paulas_study):
    _link, token = make_link(paula, [paulas_study], max_uses=2)
    first = client.get(download_url(token))
    forget_layouts()  # another web worker would build the layout again: same bytes
    second = client.get(download_url(token))
    assert body(first) == body(second)
    assert first["ETag"] == second["ETag"]


def test_a_link_for_several_studies_holds_them_all(client, alice, paulas_study,
                                                   charlies_study):
    _link, token = make_link(alice, [paulas_study, charlies_study])
    archive = zipfile.ZipFile(io.BytesIO(body(client.get(download_url(token)))))
    members = [n for n in archive.namelist() if n.startswith("PT")]
    assert len(members) == 12 + 4
    assert {n.split("/")[0] for n in members} == {"PT000000", "PT000001"}


def test_paulas_link_never_reaches_charlies_exams(client, paula, paulas_study,
                                                  charlies_study):
    _link, token = make_link(paula, [paulas_study])
    data = body(client.get(download_url(token)))
    charlie_uids = Instance.objects.filter(series__study=charlies_study).values_list(
        "sop_instance_uid", flat=True)
    for uid in charlie_uids:
        assert uid.encode() not in data
    assert b"CHARLIE-002" not in data


def test_range_requests_resume_the_download(client, paula, paulas_study):
    link, token = make_link(paula, [paulas_study], max_uses=2)
    whole = body(client.get(download_url(token)))
    half = len(whole) // 2
    first = client.get(download_url(token), HTTP_RANGE=f"bytes=0-{half - 1}")
    assert first.status_code == 206
    assert first["Content-Range"] == f"bytes 0-{half - 1}/{len(whole)}"
    second = client.get(download_url(token), HTTP_RANGE=f"bytes={half}-",
                        HTTP_IF_RANGE=first["ETag"])
    assert second.status_code == 206
    assert second["Content-Range"] == f"bytes {half}-{len(whole) - 1}/{len(whole)}"
    assert body(first) + body(second) == whole
    assert int(first["Content-Length"]) + int(second["Content-Length"]) == len(whole)
    assert DownloadLink.objects.get(pk=link.pk).uses == 2  # the whole, then the halves
    past_end = client.get(download_url(token), HTTP_RANGE=f"bytes={len(whole)}-")
    assert past_end.status_code == 416
    assert past_end["Content-Range"] == f"bytes */{len(whole)}"


def test_a_resume_is_not_a_new_use_but_a_restart_is(client, paula, paulas_study):
    link, token = make_link(paula, [paulas_study], max_uses=1)
    whole = body(client.get(download_url(token)))
    resumed = client.get(download_url(token), HTTP_RANGE=f"bytes={len(whole) - 100}-")
    assert resumed.status_code == 206 and body(resumed) == whole[-100:]
    assert DownloadLink.objects.get(pk=link.pk).uses == 1
    assert len(events(AuditAction.DOWNLOAD, outcome=Outcome.ALLOWED,
                      detail__step="resume")) == 1
    restart = client.get(download_url(token), HTTP_RANGE="bytes=0-99")
    assert restart.status_code == 410  # bytes from 0 are a new download: the use is spent


def test_after_the_last_use_ranges_fetch_at_most_the_rest_of_one_copy(client, paula,
                                                                     paulas_study):
    link, token = make_link(paula, [paulas_study], max_uses=1)
    whole = body(client.get(download_url(token)))
    third = len(whole) // 3
    # Resuming the one counted download works, up to one copy of the archive in all...
    for _ in range(3):
        part = client.get(download_url(token), HTTP_RANGE=f"bytes={len(whole) - third}-")
        assert part.status_code == 206
    # ...and not a byte more: ranges are not a way around the use limit.
    refused = client.get(download_url(token), HTTP_RANGE=f"bytes={len(whole) - third}-")
    assert refused.status_code == 410
    assert DownloadLink.objects.get(pk=link.pk).uses == 1
    assert events(AuditAction.DOWNLOAD, outcome=Outcome.DENIED)[-1].reason == "link used_up"


def test_a_revoked_link_refuses_a_resume_too(client, paula, paulas_study):
    link, token = make_link(paula, [paulas_study], max_uses=1)
    whole = body(client.get(download_url(token)))
    services.revoke_link(paula, link, Actor.for_user(paula))
    resumed = client.get(download_url(token), HTTP_RANGE=f"bytes={len(whole) - 100}-")
    assert resumed.status_code == 410


def test_a_link_mailed_outside_the_care_team_needs_the_patients_consent(paula,
                                                                        paulas_study):
    from privacy.consent import ConsentRequired

    with pytest.raises(ConsentRequired):
        make_link(paula, [paulas_study], recipient_email="friend@elsewhere.example",
                  link_url=lambda t: f"https://portal.example/s/{t}")
    assert not DownloadLink.objects.exists()


def test_a_resume_without_the_first_part_is_a_new_download(client, paula, paulas_study):
    _link, token = make_link(paula, [paulas_study], max_uses=1)
    response = client.get(download_url(token), HTTP_RANGE="bytes=100-")
    assert response.status_code == 206
    assert DownloadLink.objects.get().uses == 1


def test_any_slice_of_the_archive_is_the_same_bytes_as_the_whole():
    members = [zipstream.Member.from_bytes(f"F{i}", bytes([i]) * (i * 37)) for i in range(20)]
    archive = zipstream.Archive(members, datetime.datetime(2026, 1, 1))
    whole = b"".join(archive)
    assert len(whole) == archive.size
    for start, end in [(0, 1), (5, 400), (30, 31), (1000, archive.size), (0, archive.size)]:
        assert b"".join(archive.iter_range(start, end)) == whole[start:end]
    assert zipfile.ZipFile(io.BytesIO(whole)).testzip() is None


class _Seekable(io.RawIOBase):
    """A read-only file over an archive, reading only the ranges asked for."""

    def __init__(self, archive: zipstream.Archive) -> None:
        self.archive, self.pos = archive, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: offset, 1: self.pos + offset, 2: self.archive.size + offset}[whence]
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buffer) -> int:
        data = b"".join(self.archive.iter_range(self.pos, self.pos + len(buffer)))
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)


def test_members_past_4_gib_get_zip64_records():
    big = 5 * 1024**3

    def zeros(offset: int):
        remaining = big - offset
        while remaining:
            n = min(remaining, 1 << 20)
            yield bytes(n)
            remaining -= n

    members = [zipstream.Member("BIG", big, 0x12345678, zeros),
               zipstream.Member.from_bytes("AFTER", b"tail")]
    archive = zipstream.Archive(members, datetime.datetime(2026, 1, 1))
    with zipfile.ZipFile(_Seekable(archive)) as zf:
        infos = zf.infolist()
        assert [(i.filename, i.file_size) for i in infos] == [("BIG", big), ("AFTER", 4)]
        assert infos[1].header_offset > 2**32
        assert zf.read("AFTER") == b"tail"


def test_downloading_streams_and_never_holds_the_study(client, paula, tmp_path_factory):
    folder = tmp_path_factory.mktemp("big-study")
    spec = PatientSpec("PAULA-001", "Pereira^Paula", datetime.date(1975, 4, 12), "F")
    _uid, paths = write_study(folder, spec, [SeriesSpec("CT", 40, size=512)],
                              study_date=datetime.date(2026, 1, 5), accession="ACC-BIG",
                              description="CT big")
    ingest_paths(paths)
    Patient.objects.filter(patient_id="PAULA-001").update(user=paula)
    study = Study.objects.get(study_instance_uid=_uid)
    _link, token = make_link(paula, [study], max_uses=2)
    services.prepare(_link.pk)  # as the background task does after the link is made
    # Once first, so imports and compiled templates are not counted; the layout is then
    # dropped from the cache, so the measured download builds it again from the headers.
    body(client.get(download_url(token)))
    forget_layouts()

    tracemalloc.start()
    try:
        response = client.get(download_url(token))
        assert isinstance(response, StreamingHttpResponse)
        total = 0
        for chunk in cast(Iterator[bytes], response.streaming_content):
            total += len(chunk)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert study.size_bytes > 20 * 1024 * 1024
    assert total > study.size_bytes
    assert peak < study.size_bytes / 5, (peak, study.size_bytes)  # measured: 1.9 MB of 21 MB


# --- Refusals -------------------------------------------------------------------------------


def test_an_expired_link_is_refused_with_a_clear_page(client, paula, paulas_study):
    link, token = make_link(paula, [paulas_study])
    DownloadLink.objects.filter(pk=link.pk).update(expires=timezone.now())
    for url in (reverse("sharing:public_link", args=[token]), download_url(token)):
        response = client.get(url)
        assert response.status_code == 410
        assert response.context["reason"] == "expired"
        assert "Traceback" not in response.content.decode()
    refused = events(AuditAction.DOWNLOAD, outcome=Outcome.FAILED)
    assert refused and refused[-1].reason == "link expired"
    assert refused[-1].study_uid == paulas_study.study_instance_uid


def test_a_revoked_link_is_refused_and_the_revocation_is_audited(client, paula,
                                                                 paulas_study):
    link, token = make_link(paula, [paulas_study])
    client.force_login(paula)
    assert client.post(reverse("sharing:link_revoke", args=[link.pk])).status_code == 302
    client.logout()
    response = client.get(download_url(token))
    assert response.status_code == 410
    assert response.templates[0].name == "sharing/refused.html"
    assert response.context["reason"] == "revoked"
    revoked = [e for e in events(AuditAction.SHARE) if e.detail.get("step") == "revoke_link"]
    assert len(revoked) == 1 and revoked[0].outcome == Outcome.ALLOWED
    assert events(AuditAction.DOWNLOAD, outcome=Outcome.DENIED)[-1].reason == "link revoked"


def test_charlie_cannot_revoke_paulas_link(client, charlie, paula, paulas_study):
    link, _token = make_link(paula, [paulas_study])
    client.force_login(charlie)
    assert client.post(reverse("sharing:link_revoke", args=[link.pk])).status_code == 404
    assert DownloadLink.objects.get().revoked is None


def test_a_used_up_link_is_refused(client, paula, paulas_study):
    _link, token = make_link(paula, [paulas_study], max_uses=1)
    assert client.get(download_url(token)).status_code == 200
    client.cookies.clear()
    response = client.get(download_url(token))
    assert response.status_code == 410
    assert response.context["reason"] == "used_up"
    assert events(AuditAction.DOWNLOAD, outcome=Outcome.DENIED)[-1].reason == "link used_up"


def test_a_pin_protected_link_asks_for_the_pin_and_refuses_a_wrong_one(client, paula,
                                                                       paulas_study):
    _link, token = make_link(paula, [paulas_study], pin="2468")
    page = client.get(reverse("sharing:public_link", args=[token]))
    assert page.status_code == 200 and 'name="pin"' in page.content.decode()
    assert paulas_study.description not in page.content.decode()  # nothing before the PIN
    assert client.get(download_url(token)).status_code == 302  # back to the PIN form

    wrong = client.post(reverse("sharing:public_link", args=[token]), {"pin": "1111"})
    assert wrong.status_code == 403
    assert wrong.context["pin_error"]
    assert events(AuditAction.DOWNLOAD, outcome=Outcome.DENIED)[-1].reason == "link wrong_pin"

    right = client.post(reverse("sharing:public_link", args=[token]), {"pin": "2468"})
    assert right.status_code == 302
    assert client.get(download_url(token)).status_code == 200


def test_an_unknown_link_is_a_404_page(client, db):
    response = client.get(download_url("not-a-real-token"))
    assert response.status_code == 404
    assert response.context["reason"] == "unknown"
    assert events(AuditAction.DOWNLOAD, outcome=Outcome.FAILED)[-1].reason == "link unknown"


def test_guessing_links_is_rate_limited(client, settings, paula, paulas_study):
    settings.SHARING_FAILURE_LIMIT = 5
    _link, token = make_link(paula, [paulas_study])
    for n in range(5):
        assert client.get(reverse("sharing:public_link", args=[f"guess{n}"])).status_code \
            == 404
    blocked = client.get(reverse("sharing:public_link", args=["guess-again"]))
    assert blocked.status_code == 429
    assert blocked["Retry-After"]
    assert client.get(download_url(token)).status_code == 429  # even a real one, for now
    other = client.get(download_url(token), REMOTE_ADDR="10.9.8.7")
    assert other.status_code == 200  # another address is not affected


def test_wrong_pins_count_towards_the_limit(client, settings, paula, paulas_study):
    settings.SHARING_FAILURE_LIMIT = 3
    _link, token = make_link(paula, [paulas_study], pin="2468")
    for _ in range(3):
        client.post(reverse("sharing:public_link", args=[token]), {"pin": "0000"})
    response = client.post(reverse("sharing:public_link", args=[token]), {"pin": "2468"})
    assert response.status_code == 429


# --- Concurrency ----------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_downloads_never_exceed_max_uses(live_server, paula, ct_study):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (DATABASE_URL)")
    ingest_paths(ct_study[1])
    Patient.objects.filter(patient_id="PAULA-001").update(user=paula)
    study = Study.objects.get(study_instance_uid=ct_study[0])
    link, token = make_link(paula, [study], max_uses=3)
    services.prepare(link.pk)
    url = f"{live_server.url}{download_url(token)}"
    statuses: list[int] = []
    barrier = threading.Barrier(10)

    def fetch() -> None:
        barrier.wait()
        response = requests.get(url, timeout=60)
        statuses.append(response.status_code)
        if response.status_code == 200:
            assert zipfile.ZipFile(io.BytesIO(response.content)).testzip() is None

    threads = [threading.Thread(target=fetch) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] * 3 + [410] * 7
    assert DownloadLink.objects.get(pk=link.pk).uses == 3
    assert len(events(AuditAction.DOWNLOAD, outcome=Outcome.ALLOWED)) == 3


def forget_layouts() -> None:
    """Drop the cached ZIP layouts, as a web worker that never built one has none; the
    rest of a shared Redis (other tests' keys, the broker's queues) is left alone, where
    ``cache.clear()`` would empty the whole database."""
    backend: Any = cache
    raw = getattr(getattr(backend, "_cache", None), "get_client", None)
    if raw is None:
        cache.clear()  # a per-process memory cache: nothing else is in it
        return
    client = raw(write=True)
    for key in client.scan_iter(match=backend.make_key("sharing:plan:*")):
        client.delete(key)
