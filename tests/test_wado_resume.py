"""A WADO-RS download sent as stored resumes with a Range request (dicomweb.resume).

The same study gives the same bytes on every request (its multipart boundary comes from
the objects and SECRET_KEY, not from chance), so the rest of a cut download can be asked
for, byte for byte; an ETag that no longer matches gets the whole body, and transcoded
answers (made on the fly) offer no ranges.
"""

from __future__ import annotations

import pytest
import requests
from pydicom.uid import ImplicitVRLittleEndian

from audit.models import AuditAction, AuditEvent
from tests import wado_support
from tests.wado_support import parse_multipart, session_for

paula_study = wado_support.paula_study
charlie_study = wado_support.charlie_study

pytestmark = pytest.mark.django_db(transaction=True)

DICOM_PARTS = 'multipart/related; type="application/dicom"'


def _get(live_server, user, path: str, **headers: str) -> requests.Response:
    return session_for(user).get(f"{live_server.url}/dicomweb/{path}", timeout=60,
                                 headers={"Accept": f"{DICOM_PARTS}; transfer-syntax=*",
                                          **headers})


def test_the_same_study_is_the_same_bytes_on_every_request(live_server, paula_study, paula):
    study_uid, paths = paula_study
    first = _get(live_server, paula, f"studies/{study_uid}")
    second = _get(live_server, paula, f"studies/{study_uid}")
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    assert first.headers["ETag"] == second.headers["ETag"]
    assert first.headers["Accept-Ranges"] == "bytes"
    assert int(first.headers["Content-Length"]) == len(first.content)
    assert len(parse_multipart(first.headers["Content-Type"], first.content)) == len(paths)


def test_the_rest_of_a_cut_download_comes_back_with_a_range(live_server, paula_study, paula):
    study_uid, _ = paula_study
    whole = _get(live_server, paula, f"studies/{study_uid}")
    cut = len(whole.content) // 3 + 17  # inside an object's bytes
    rest = _get(live_server, paula, f"studies/{study_uid}", Range=f"bytes={cut}-",
                **{"If-Range": whole.headers["ETag"]})
    assert rest.status_code == 206
    assert rest.headers["Content-Range"] == (
        f"bytes {cut}-{len(whole.content) - 1}/{len(whole.content)}")
    assert whole.content[:cut] + rest.content == whole.content
    middle = _get(live_server, paula, f"studies/{study_uid}", Range="bytes=100-299")
    assert middle.status_code == 206 and middle.content == whole.content[100:300]
    tail = _get(live_server, paula, f"studies/{study_uid}", Range="bytes=-50")
    assert tail.content == whole.content[-50:]


def test_a_range_is_a_read_like_any_other(live_server, paula_study, charlie_study, paula,
                                          charlie):
    study_uid, _ = paula_study
    refused = _get(live_server, charlie, f"studies/{study_uid}", Range="bytes=10-")
    assert refused.status_code == 404
    assert AuditEvent.objects.filter(action=AuditAction.RETRIEVE, outcome="denied",
                                     object_uid=study_uid, username=charlie.username).exists()


def test_a_changed_etag_gets_the_whole_body_and_a_range_past_the_end_is_416(
        live_server, paula_study, paula):
    study_uid, _ = paula_study
    whole = _get(live_server, paula, f"studies/{study_uid}")
    stale = _get(live_server, paula, f"studies/{study_uid}", Range="bytes=10-",
                 **{"If-Range": '"another-version"'})
    assert stale.status_code == 200 and stale.content == whole.content
    past = _get(live_server, paula, f"studies/{study_uid}",
                Range=f"bytes={len(whole.content)}-")
    assert past.status_code == 416
    assert past.headers["Content-Range"] == f"bytes */{len(whole.content)}"


def test_a_transcoded_answer_offers_no_ranges(live_server, paula_study, paula):
    study_uid, _ = paula_study
    answer = _get(live_server, paula, f"studies/{study_uid}", Range="bytes=10-",
                  Accept=f"{DICOM_PARTS}; transfer-syntax={ImplicitVRLittleEndian}")
    assert answer.status_code == 200
    assert "Accept-Ranges" not in answer.headers and "ETag" not in answer.headers
