"""Every association shares the listener's supported presentation contexts instead of a
copy of them (dimse/server.py: SupportedContext): negotiating them, with the roles C-GET
asks for, leaves them as they were."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from dimse import pynetdicom_patches
from dimse.handlers import Listener
from dimse.models import Peer
from dimse.server import start, supported_contexts
from dimse.testing import LOOPBACK, dcmtk, free_port

pytestmark = pytest.mark.django_db(transaction=True)


def _snapshot(contexts: list[Any]) -> list[tuple[Any, ...]]:
    return [(cx.abstract_syntax, list(cx.transfer_syntax), cx.scu_role, cx.scp_role,
             cx.context_id, cx.result, cx.as_scu, cx.as_scp) for cx in contexts]


@pytest.fixture
def server(dicom_storage) -> Iterator[tuple[Any, int]]:
    port = free_port()
    running = start(Listener(ae_title="PORTAL"), LOOPBACK, port, block=False)
    assert running is not None
    try:
        yield running, port
    finally:
        running.shutdown()
        pynetdicom_patches.uninstall()  # other tests see pynetdicom as it is


def test_a_copy_of_a_supported_context_is_the_context_itself():
    from copy import deepcopy

    contexts = supported_contexts()
    assert all(a is b for a, b in zip(deepcopy(contexts), contexts, strict=True))


def test_associations_leave_the_supported_contexts_as_they_were(server, tmp_path: Path):
    running, port = server
    Peer.objects.create(ae_title="WORKSTATION", host="127.0.0.1", may_store=True,
                        may_query=True, may_retrieve=True)
    before = _snapshot(running.contexts)
    path = Path(str(get_testdata_file("CT_small.dcm")))
    study = str(dcmread(path).StudyInstanceUID)
    address = [LOOPBACK, str(port)]
    calls = [
        ("echoscu", "-aet", "WORKSTATION", "-aec", "PORTAL", *address),
        ("storescu", "-aet", "WORKSTATION", "-aec", "PORTAL", *address, str(path)),
        ("findscu", "-aet", "WORKSTATION", "-aec", "PORTAL", "-S", "-k",
         "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}", *address),
        ("getscu", "-aet", "WORKSTATION", "-aec", "PORTAL", "-S", "-od", str(tmp_path), "-k",
         "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}", *address),
    ]
    for call in calls:
        result = dcmtk(*call, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    assert len(list(tmp_path.glob("CT*"))) == 1  # the C-GET brought the object back
    assert _snapshot(running.contexts) == before
