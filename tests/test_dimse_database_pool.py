"""On PostgreSQL the listener's associations take their connection from a pool: an
association after the first gets a database connection that was already open, instead of a
new server process each (DICOM_DATABASE_POOL; dimse.server.prepare_database)."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from pynetdicom import AE

from dimse.models import Peer
from dimse.sop_classes import VERIFICATION
from dimse.testing import LOOPBACK, dcmtk, free_port
from tests.conftest import database_url

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(os.environ.get("DATABASE_URL", "").split(":")[0] not in (
        "postgres", "postgresql"), reason="the pool is PostgreSQL's"),
]


def _listener(tmp_path: Path, dicom_storage: Path, pool: bool) -> Iterator[int]:
    port = free_port()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings",
           "DATABASE_URL": database_url(), "DATA_DIR": str(tmp_path / "data"),
           "DICOM_STORAGE_DIR": str(dicom_storage),
           "DICOM_SPOOL_DIR": str(settings.DICOM_SPOOL_DIR),
           "DICOM_DATABASE_POOL": "1" if pool else "0"}
    process = subprocess.Popen(
        [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "dicom_listener",
         "--host", LOOPBACK, "--port", str(port), "--processes", "1"],
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


def _new_connections_of_associations(port: int, count: int) -> list[int]:
    """For each association (open, one C-ECHO answered, then released): how many database
    server processes were started while it was open."""
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(VERIFICATION)
    started = []
    for _ in range(count):
        moment = _now()
        assoc = ae.associate(LOOPBACK, port, ae_title="PORTAL")
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0x0000
        started.append(_backends_started_since(moment))
        assoc.release()
    return started


@pytest.fixture
def modality() -> None:
    Peer.objects.create(ae_title="MODALITY", host="127.0.0.1", may_store=True)


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
