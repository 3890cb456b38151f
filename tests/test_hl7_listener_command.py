"""``manage.py hl7_listener`` as production runs it: a process of its own on the port of
``--port`` or ``HL7_PORT``, which an EHR's real MLLP client sends an order to and gets its
AA; and bin/portal starting it with the lines bin/portal itself runs."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from dimse.testing import LOOPBACK, free_port
from orders.models import Hl7Message, Hl7Peer, ScheduledProcedure
from tests.conftest import database_url
from tests.hl7_support import MllpClient, msa, orm

pytestmark = pytest.mark.django_db(transaction=True)

PROJECT = Path(settings.BASE_DIR)


@pytest.fixture
def ehr(clinic) -> Hl7Peer:
    return Hl7Peer.objects.create(name="EHR Sul", host=LOOPBACK, sending_application="EHR",
                                  sending_facility="SUL", clinic=clinic)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings",
           "DATABASE_URL": database_url(), "DATA_DIR": str(tmp_path / "data"),
           "DATABASE_CONN_MAX_AGE": "0", "HL7_BIND": LOOPBACK, **extra}
    for name in ("HL7_PORT", "PROMETHEUS_MULTIPROC_DIR"):
        if name not in extra:
            env.pop(name, None)
    return env


def _connect(port: int, process: subprocess.Popen[bytes], log: Path,
             timeout: float = 60) -> MllpClient:
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, log.read_text()
        try:
            return MllpClient(port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextlib.contextmanager
def _running(command: list[str], env: dict[str, str], log: Path) -> Iterator[
        subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=PROJECT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)  # bin/portal's lines start the listener in a child
        process.wait(timeout=30)


def _order_is_scheduled(port: int, process: subprocess.Popen[bytes], log: Path,
                        accession: str) -> None:
    client = _connect(port, process, log)
    try:
        ack = client.send(orm(f"MSG-{accession}", f"SUL-{accession}", accession))
    finally:
        client.close()
    assert msa(ack)[:2] == ("AA", f"MSG-{accession}"), msa(ack)
    procedure = ScheduledProcedure.objects.get(accession_number=accession)
    assert (procedure.patient.patient_id, procedure.modality) == (f"SUL-{accession}", "CT")
    assert Hl7Message.objects.get(control_id=f"MSG-{accession}").outcome == "AA"


def test_the_command_listens_on_the_port_of_its_port_option(tmp_path, ehr):
    port = free_port()
    log = tmp_path / "hl7.log"
    command = [sys.executable, "manage.py", "hl7_listener", "--port", str(port)]
    with _running(command, _env(tmp_path), log) as process:
        _order_is_scheduled(port, process, log, "ACC801")
    assert f"HL7 listener on {LOOPBACK}:{port}" in log.read_text()


def test_the_command_listens_on_hl7_port_without_the_option(tmp_path, ehr):
    port = free_port()
    log = tmp_path / "hl7.log"
    command = [sys.executable, "manage.py", "hl7_listener"]
    with _running(command, _env(tmp_path, HL7_PORT=str(port)), log) as process:
        _order_is_scheduled(port, process, log, "ACC802")


def _bin_portal_hl7_lines() -> str:
    """The lines of bin/portal that start the HL7 listener, as it has them."""
    script = (PROJECT / "bin" / "portal").read_text()
    found = re.search(r"^if \$PY manage\.py help hl7_listener\b.*?^fi$", script,
                      re.MULTILINE | re.DOTALL)
    assert found, "bin/portal does not start the HL7 listener"
    return found.group(0)


def test_bin_portal_starts_the_hl7_listener_on_hl7_port(tmp_path, ehr):
    lines = _bin_portal_hl7_lines()
    assert "$PY manage.py hl7_listener &" in lines and 'pids+=($!)' in lines
    port = free_port()
    log = tmp_path / "hl7.log"
    # bin/portal's own lines, with its PY, then waiting on what they started.
    script = f"set -euo pipefail\nPY={sys.executable}\npids=()\n{lines}\nwait \"${{pids[@]}}\"\n"
    with _running(["bash", "-c", script], _env(tmp_path, HL7_PORT=str(port)), log) as process:
        _order_is_scheduled(port, process, log, "ACC803")
