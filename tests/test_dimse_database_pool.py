"""On PostgreSQL the listener's associations take their connection from a pool: an
association after the first gets a database connection that was already open, instead of a
new server process each (DICOM_DATABASE_POOL; dimse.server.prepare_database)."""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from pydicom.dataset import Dataset
from pynetdicom import AE

from dimse.models import Peer
from dimse.sop_classes import STUDY_ROOT_FIND, VERIFICATION
from dimse.testing import LOOPBACK, dcmtk, free_port
from tests.conftest import database_url

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(os.environ.get("DATABASE_URL", "").split(":")[0] not in (
        "postgres", "postgresql"), reason="the pool is PostgreSQL's"),
]


def _listener(tmp_path: Path, dicom_storage: Path, pool: bool, *, database: str = "",
              processes: int = 1, peer_cache: float = 5.0) -> Iterator[int]:
    port = free_port()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings",
           "DATABASE_URL": database or database_url(), "DATA_DIR": str(tmp_path / "data"),
           "DICOM_STORAGE_DIR": str(dicom_storage),
           "DICOM_SPOOL_DIR": str(settings.DICOM_SPOOL_DIR),
           "DICOM_DATABASE_POOL": "1" if pool else "0",
           "DICOM_PEER_CACHE_SECONDS": str(peer_cache)}
    process = subprocess.Popen(
        [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "dicom_listener",
         "--host", LOOPBACK, "--port", str(port), "--processes", str(processes)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while dcmtk("echoscu", "-aet", "MODALITY", "-aec", "PORTAL", LOOPBACK, str(port),
                    timeout=10).returncode != 0:
            assert process.poll() is None and time.monotonic() < deadline, "no listener"
            time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def _now() -> datetime.datetime:
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        row = cursor.fetchone()
    assert row is not None
    moment: datetime.datetime = row[0]
    return moment


def _backends_started_since(moment: datetime.datetime) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                       "current_database() AND pid <> pg_backend_pid() AND backend_start > %s",
                       [moment])
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])


def _new_connections_of_associations(port: int, count: int, *,
                                     find: bool = True) -> list[int]:
    """For each association (open, one C-FIND, or with ``find`` False one C-ECHO,
    answered, then released): how many database server processes were started while it
    was open."""
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(VERIFICATION)
    ae.add_requested_context(STUDY_ROOT_FIND)
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = "NOBODY"
    started = []
    for _ in range(count):
        moment = _now()
        assoc = ae.associate(LOOPBACK, port, ae_title="PORTAL")
        assert assoc.is_established
        if find:
            statuses = [status.Status for status, _ in assoc.send_c_find(
                query, STUDY_ROOT_FIND)]
            assert statuses[-1] == 0x0000, statuses
        else:
            assert assoc.send_c_echo().Status == 0x0000
        started.append(_backends_started_since(moment))
        assoc.release()
    return started


@pytest.fixture
def modality() -> None:
    Peer.objects.create(ae_title="MODALITY", host="127.0.0.1", may_store=True,
                        may_query=True)


@pytest.mark.usefixtures("modality")
def test_associations_reuse_the_connections_of_the_ones_before(tmp_path, dicom_storage):
    for port in _listener(tmp_path, dicom_storage, pool=True):
        started = _new_connections_of_associations(port, 6)
    # The first echo above (before these) opened the pool; it may grow once more.
    assert sum(started) <= 1, started


@pytest.mark.usefixtures("modality")
def test_without_the_pool_each_association_opens_its_own(tmp_path, dicom_storage):
    for port in _listener(tmp_path, dicom_storage, pool=False):
        started = _new_connections_of_associations(port, 4)
    assert started == [1, 1, 1, 1]


@pytest.mark.usefixtures("modality")
def test_an_echo_opens_no_database_connection(tmp_path, dicom_storage):
    """The peer comes from the process's copy of the table and the association's entry is
    written by the audit writer's own connection (kept open without the pool)."""
    for port in _listener(tmp_path, dicom_storage, pool=False):
        started = _new_connections_of_associations(port, 4, find=False)
    assert started == [0, 0, 0, 0]


class DatabaseLink:
    """The listener's way to PostgreSQL through a TCP relay this test cuts and restores:
    to the listener, cutting it is the database going down (every connection dropped, new
    ones refused) and restoring it the database back after a restart."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.listening: socket.socket | None = None
        self.is_up = False
        self.up()

    def up(self) -> None:
        listening = socket.create_server((LOOPBACK, self.port))
        self.listening = listening
        self.is_up = True
        threading.Thread(target=self._accept, args=(listening,), daemon=True).start()

    def down(self) -> None:
        assert self.listening is not None
        with self.lock:
            self.is_up = False
            # A plain close() would leave the thread blocked in accept() accepting.
            with contextlib.suppress(OSError):
                self.listening.shutdown(socket.SHUT_RDWR)
            self.listening.close()
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.sockets.clear()

    def _accept(self, listening: socket.socket) -> None:
        while True:
            try:
                client, _ = listening.accept()
            except OSError:
                return  # cut
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self.lock:
                if not self.is_up:  # cut meanwhile
                    client.close()
                    server.close()
                    continue
                self.sockets += [client, server]
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                target.shutdown(socket.SHUT_WR)


def _through(link: DatabaseLink) -> str:
    db = connection.settings_dict
    return (f"postgres://{db['USER'] or 'postgres'}@{LOOPBACK}:{link.port}/"
            f"{db['NAME']}")


def _find(port: int) -> tuple[bool, float]:
    """One C-FIND by findscu: whether it ended in success, and how long it took."""
    started = time.monotonic()
    result = dcmtk("findscu", "-v", "-aet", "MODALITY", "-aec", "PORTAL", "-S",
                   "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=NOBODY",
                   LOOPBACK, str(port), timeout=60)
    return "Final Find Response (Success)" in result.stderr, time.monotonic() - started


@pytest.mark.usefixtures("modality")
def test_right_after_a_database_restart_every_listener_process_serves_at_once(
        tmp_path, dicom_storage):
    db = connection.settings_dict
    link = DatabaseLink((db["HOST"] or LOOPBACK, int(db["PORT"] or 5432)))
    for port in _listener(tmp_path, dicom_storage, pool=True, database=_through(link),
                          processes=2, peer_cache=0.0):
        for _ in range(4):  # both processes have their pool open
            assert _find(port)[0]
        link.down()
        try:
            served, took = _find(port)
            # Down: refused, without a long wait on the pool.
            assert not served
            assert took < 1.5, took  # the pool alone waited 2 s
            time.sleep(4)  # the pools are now between reconnection attempts
        finally:
            link.up()
        for _ in range(6):  # both processes, each at once
            served, took = _find(port)
            assert served
            assert took < 2.0, took
