# ruff: noqa: F811  (the imported mr fixture is a parameter here)
"""Which syntax OHIF's ``transfer-syntax=*`` frames come in depends on where the viewer is.

On the clinic's LAN (``WADO_FRAMES_LAN_NETWORKS``: loopback and the private ranges by
default) a frame stored uncompressed goes as stored: the transfer costs less than the
browser's decode of a compressed frame. From anywhere else (a remote site on a slow link)
it goes losslessly compressed (``WADO_FRAMES_ANY_SYNTAX``, JPEG-LS). The client is the one
:mod:`portal.client_address` finds, so a proxy in front changes nothing and a forged
``X-Forwarded-For`` does not buy a LAN answer. A client that names a syntax gets it
wherever it is.
"""

from __future__ import annotations

import ipaddress

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless

from tests.http_bodies import body
from tests.test_settings import start
from tests.wado_support import parse_multipart

from .test_wado_compressed_frames import mr  # noqa: F401  (fixture: MR_small stored)

pytestmark = pytest.mark.django_db

OHIF_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
STORED_PART = f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"
JPEG_LS_PART = f"image/jls; transfer-syntax={JPEGLSLossless}"


def _frame(client, ds: Dataset, accept: str = OHIF_ACCEPT, **meta: str) -> tuple[str, bytes]:
    url = (f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
           f"/instances/{ds.SOPInstanceUID}/frames/1")
    response = client.get(url, HTTP_ACCEPT=accept, **meta)
    assert response.status_code == 200, response.content
    [(headers, payload)] = parse_multipart(response["Content-Type"], body(response))
    return headers["content-type"], payload


@pytest.mark.parametrize("address", ["127.0.0.1", "192.168.10.25", "10.1.2.3", "172.20.0.9",
                                     "::1", "fd00::7"])
def test_a_viewer_on_the_lan_gets_the_frame_as_stored(client, mr, address):
    assert _frame(client, mr, REMOTE_ADDR=address) == (STORED_PART, mr.PixelData)


@pytest.mark.parametrize("address", ["203.0.113.9", "2001:db8::5"])
def test_a_viewer_elsewhere_gets_the_frame_losslessly_compressed(client, mr, address):
    part_type, payload = _frame(client, mr, REMOTE_ADDR=address)
    assert part_type == JPEG_LS_PART
    assert len(payload) < len(mr.PixelData)


def test_a_named_syntax_is_sent_on_the_lan_too(client, mr):
    part_type, _ = _frame(client, mr, 'multipart/related; type="image/jls"',
                          REMOTE_ADDR="192.168.10.25")
    assert part_type == JPEG_LS_PART


def test_behind_a_trusted_proxy_the_remote_client_decides_not_the_proxy(client, mr, settings):
    settings.TRUSTED_PROXIES = [ipaddress.ip_network("10.0.0.2/32")]
    part_type, _ = _frame(client, mr, REMOTE_ADDR="10.0.0.2",
                          HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert part_type == JPEG_LS_PART
    assert _frame(client, mr, REMOTE_ADDR="10.0.0.2",
                  HTTP_X_FORWARDED_FOR="192.168.10.25")[0] == STORED_PART


def test_a_forged_forwarded_for_does_not_make_a_remote_client_local(client, mr):
    part_type, _ = _frame(client, mr, REMOTE_ADDR="203.0.113.9",
                          HTTP_X_FORWARDED_FOR="192.168.10.25")
    assert part_type == JPEG_LS_PART


def test_the_lan_can_be_narrowed_or_emptied(client, mr, settings):
    settings.WADO_FRAMES_LAN_NETWORKS = [ipaddress.ip_network("192.168.10.0/24")]
    assert _frame(client, mr, REMOTE_ADDR="192.168.10.25")[0] == STORED_PART
    assert _frame(client, mr, REMOTE_ADDR="192.168.20.25")[0] == JPEG_LS_PART
    settings.WADO_FRAMES_LAN_NETWORKS = []
    assert _frame(client, mr, REMOTE_ADDR="127.0.0.1")[0] == JPEG_LS_PART


def test_the_setting_reads_networks_or_none_and_refuses_what_is_not_a_network():
    show = "import portal.settings as s; print(s.WADO_FRAMES_LAN_NETWORKS)"
    for value, printed in (("none", "[]"),
                           ("192.168.10.0/24", "[IPv4Network('192.168.10.0/24')]")):
        result = start(show, WADO_FRAMES_LAN_NETWORKS=value)
        assert result.stdout.strip() == printed, result.stderr
    assert "ip_network('::1/128')" in start(show).stdout.replace("IPv6Network", "ip_network")
    result = start(WADO_FRAMES_LAN_NETWORKS="the clinic")
    assert result.returncode != 0
    assert "WADO_FRAMES_LAN_NETWORKS" in result.stderr
