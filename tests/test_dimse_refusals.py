"""Refused associations are on the trail once per calling address and window, with a count
of the ones in between; the listener listens only on the address it is given."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from audit.models import AuditAction, AuditEvent, Outcome
from dimse.models import Peer
from dimse.testing import dcmtk, free_port
from tests.conftest import database_url

pytestmark = pytest.mark.django_db(transaction=True)


def _refused(portal, aet: str = "STRANGER") -> None:
    result = dcmtk("echoscu", "-aet", aet, "-aec", portal.ae_title, *portal.address(),
                   timeout=30)
    portal.wait_idle()
    assert result.returncode != 0
    assert "Calling AE Title Not Recognized" in result.stderr  # every one is refused


def _refusals() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=AuditAction.ASSOCIATION,
                                          outcome=Outcome.DENIED).order_by("seq"))


def test_the_first_refusal_from_an_address_is_on_the_trail(portal):
    _refused(portal)
    (entry,) = _refusals()
    assert (entry.peer_ae, entry.ip) == ("STRANGER", "127.0.0.1")
    assert entry.detail["refused_unrecorded"] == 0


def test_further_refusals_from_that_address_in_the_window_are_refused_but_only_counted(
    portal,
):
    for aet in ("STRANGER", "OTHER", "THIRD", "STRANGER"):  # any AE title, one address
        _refused(portal, aet)
    assert len(_refusals()) == 1


def test_the_first_refusal_after_the_window_writes_how_many_were_not_written(
    portal, settings,
):
    settings.DICOM_REFUSAL_AUDIT_WINDOW = 1
    for _ in range(4):
        _refused(portal)
    time.sleep(1.2)
    _refused(portal)
    first, second = _refusals()
    assert first.detail["refused_unrecorded"] == 0
    assert second.detail["refused_unrecorded"] == 3


def test_accepted_associations_are_each_on_the_trail(portal):
    Peer.objects.create(ae_title="MODALITY", host="127.0.0.1")
    for _ in range(3):
        result = dcmtk("echoscu", "-aet", "MODALITY", "-aec", portal.ae_title,
                       *portal.address())
        assert result.returncode == 0, result.stderr
        portal.wait_idle()
    assert AuditEvent.objects.filter(action=AuditAction.ASSOCIATION, outcome=Outcome.ALLOWED,
                                     detail__event="request").count() == 3


def test_the_listener_binds_to_dicom_bind_only(tmp_path: Path, dicom_storage: Path):
    """127.0.0.2 is loopback too, but another address: nothing listens on 127.0.0.1."""
    Peer.objects.create(ae_title="ECHOER", host="127.0.0.1")  # where connections come from
    port = free_port()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings",
           "DATABASE_URL": database_url(), "DATA_DIR": str(tmp_path / "data"),
           "DICOM_STORAGE_DIR": str(dicom_storage), "DICOM_BIND": "127.0.0.2",
           "DICOM_SPOOL_DIR": str(settings.DICOM_SPOOL_DIR)}
    env.pop("S3_BUCKET", None)
    process = subprocess.Popen(
        [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "dicom_listener",
         "--port", str(port), "--processes", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while dcmtk("echoscu", "-aet", "ECHOER", "-aec", "PORTAL", "127.0.0.2", str(port),
                    timeout=10).returncode != 0:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.1)
        elsewhere = dcmtk("echoscu", "-aet", "ECHOER", "-aec", "PORTAL", "127.0.0.1",
                          str(port), timeout=10)
        assert elsewhere.returncode != 0
        assert "Association Rejected" not in elsewhere.stderr  # no answer: nothing there
    finally:
        process.terminate()
        process.wait(timeout=30)

