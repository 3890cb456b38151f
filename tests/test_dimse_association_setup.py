"""An association is answered from each listener process's copy of the peer table, and its
audit entry is committed by a writer thread while it is set up (dimse.peers, audit.writer).

What must still hold: a peer changed in admin is in force for every new association within
``DICOM_PEER_CACHE_SECONDS`` (in the process that saved it, at once); an unknown peer is
refused; an association that has ended is on the audit trail, before what it did, and the
chain verifies.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import transaction
from django.db.models import F
from pynetdicom import AE

from audit.models import AuditAction, AuditEvent, ChainHead, Outcome
from audit.trail import first_broken_link
from dimse.models import Peer
from dimse.sop_classes import VERIFICATION
from dimse.testing import LOOPBACK, RunningListener, dcmtk, free_port
from tests.conftest import database_url

pytestmark = pytest.mark.django_db(transaction=True)

CACHE_SECONDS = 2.0


def echo(port: int, aet: str = "MODALITY") -> subprocess.CompletedProcess[str]:
    return dcmtk("echoscu", "-aet", aet, "-aec", "PORTAL", LOOPBACK, str(port), timeout=30)


@pytest.fixture
def modality() -> Peer:
    return Peer.objects.create(ae_title="MODALITY", host="127.0.0.1", may_store=True,
                               may_query=True)


@pytest.fixture
def listener(modality: Peer, dicom_storage: Path,
             tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``manage.py dicom_listener`` with two worker processes (each with its own copy of
    the peer table), a short ``DICOM_PEER_CACHE_SECONDS``, on port ``listener.port``."""
    port = free_port()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings",
           "DATABASE_URL": database_url(), "DATA_DIR": str(tmp_path / "data"),
           "DICOM_STORAGE_DIR": str(dicom_storage),
           "DICOM_SPOOL_DIR": str(settings.DICOM_SPOOL_DIR),
           "DICOM_PEER_CACHE_SECONDS": str(CACHE_SECONDS)}
    env.pop("DICOM_ALLOW_UNKNOWN_PEERS", None)
    process = subprocess.Popen(
        [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "dicom_listener",
         "--host", LOOPBACK, "--port", str(port), "--processes", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while echo(port).returncode != 0:
            assert process.poll() is None and time.monotonic() < deadline, "no listener"
            time.sleep(0.1)
        process.port = port  # type: ignore[attr-defined]
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_peer_disabled_elsewhere_is_refused_by_every_listener_process_within_the_bound(
        listener, modality):
    for _ in range(4):  # both workers have read the table with the peer in it
        assert echo(listener.port).returncode == 0
    modality.enabled = False
    modality.save()  # here, in the test's process: the listener's get no signal
    changed = time.monotonic()
    while echo(listener.port).returncode == 0:
        assert time.monotonic() - changed < CACHE_SECONDS + 1.5, "still accepted"
        time.sleep(0.05)
    # Past the bound every process refuses it, whichever takes the association.
    time.sleep(max(0.0, changed + CACHE_SECONDS + 0.2 - time.monotonic()))
    for _ in range(6):
        result = echo(listener.port)
        assert "Calling AE Title Not Recognized" in result.stderr, result.stderr


def test_a_peer_given_another_host_in_another_process_is_refused_within_the_bound(
        listener, modality):
    assert echo(listener.port).returncode == 0
    Peer.objects.filter(pk=modality.pk).update(host="10.9.9.9")  # no signal anywhere
    time.sleep(CACHE_SECONDS + 0.2)
    for _ in range(4):
        assert "Calling AE Title Not Recognized" in echo(listener.port).stderr


def test_a_peer_added_in_another_process_is_accepted_within_the_bound(listener):
    assert "Calling AE Title Not Recognized" in echo(listener.port, "CT02").stderr
    Peer.objects.create(ae_title="CT02", host="127.0.0.1", may_store=True)
    time.sleep(CACHE_SECONDS + 0.2)
    for _ in range(4):
        assert echo(listener.port, "CT02").returncode == 0


def test_a_peer_changed_in_the_listeners_own_process_is_in_force_at_once(
        portal: RunningListener, modality, settings):
    settings.DICOM_PEER_CACHE_SECONDS = 3600  # only the signal can tell it
    port = int(portal.port)
    assert echo(port).returncode == 0
    modality.enabled = False
    modality.save()
    assert "Calling AE Title Not Recognized" in echo(port).stderr
    modality.enabled = True
    modality.save()
    assert echo(port).returncode == 0
    modality.delete()
    assert "Calling AE Title Not Recognized" in echo(port).stderr


def test_an_unknown_peer_is_refused_while_the_table_is_cached(portal, modality, settings):
    settings.DICOM_PEER_CACHE_SECONDS = 3600
    port = int(portal.port)
    assert echo(port).returncode == 0  # the table is read and kept
    refused = echo(port, "STRANGER")
    assert "Calling AE Title Not Recognized" in refused.stderr
    portal.wait_idle()
    entry = AuditEvent.objects.filter(peer_ae="STRANGER").get()
    assert (entry.action, entry.outcome) == (AuditAction.ASSOCIATION, Outcome.DENIED)


def test_an_association_that_has_ended_is_on_the_trail_and_the_chain_verifies(
        listener):
    before = AuditEvent.objects.filter(action=AuditAction.ASSOCIATION).count()
    for _ in range(5):
        assert echo(listener.port).returncode == 0
        # No waiting: the release is answered once the association's entry is committed.
        assert AuditEvent.objects.filter(
            action=AuditAction.ASSOCIATION, outcome=Outcome.ALLOWED,
            peer_ae="MODALITY").count() == before + 1
        before += 1
    assert first_broken_link() is None


def test_an_open_association_is_on_the_trail_when_the_listener_stops(
        listener):
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(VERIFICATION)
    before = AuditEvent.objects.filter(action=AuditAction.ASSOCIATION).count()
    assoc = ae.associate(LOOPBACK, listener.port, ae_title="PORTAL")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    try:
        listener.terminate()  # its workers stop, committing what they handed to the writer
        deadline = time.monotonic() + 10
        while assoc.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        assoc.abort()
    assert AuditEvent.objects.filter(action=AuditAction.ASSOCIATION, outcome=Outcome.ALLOWED,
                                     peer_ae="MODALITY").count() == before + 1
    assert first_broken_link() is None


def test_an_entry_the_writer_still_holds_is_committed_before_a_stopped_listener_exits(
        listener):
    """SIGTERM reaches the workers while the association's entry waits for the chain head
    (held here): they exit only once the writer has committed it (dimse.server's
    ``flush_audit_on_signals``); killed at once, the entry would be lost."""
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(VERIFICATION)
    before = AuditEvent.objects.filter(action=AuditAction.ASSOCIATION).count()
    with transaction.atomic():
        ChainHead.objects.filter(pk=1).update(seq=F("seq"))  # no append until this ends
        assoc = ae.associate(LOOPBACK, listener.port, ae_title="PORTAL")
        try:
            assert assoc.is_established
            assert assoc.send_c_echo().Status == 0x0000  # an echo does not wait for it
            listener.terminate()
            time.sleep(1.0)
            assert listener.poll() is None, "the listener exited with an entry unwritten"
        finally:
            assoc.abort()
    listener.wait(timeout=30)
    assert AuditEvent.objects.filter(action=AuditAction.ASSOCIATION, outcome=Outcome.ALLOWED,
                                     peer_ae="MODALITY").count() == before + 1
    assert first_broken_link() is None


def test_a_query_is_on_the_trail_after_its_association(portal, modality, ct_study, tmp_path):
    from .conftest import ingest_paths
    from .test_dimse_find import findscu

    ingest_paths(ct_study[1])
    result, answers = findscu(portal, tmp_path, "QueryRetrieveLevel=STUDY", "PatientID",
                              aet="MODALITY")
    assert result.returncode == 0, result.stderr
    assert answers
    portal.wait_idle()
    opened = AuditEvent.objects.get(action=AuditAction.ASSOCIATION, peer_ae="MODALITY")
    searched = AuditEvent.objects.filter(action=AuditAction.SEARCH, peer_ae="MODALITY")
    assert searched.exists()
    assert all(entry.seq > opened.seq for entry in searched)
    assert first_broken_link() is None
