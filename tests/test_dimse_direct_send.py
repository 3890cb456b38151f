"""An association's own thread writes to its socket, and reads the reply, when pynetdicom's
DUL thread has nothing to send (dimse.direct_send): what it writes arrives as the DUL would
have sent it, and whenever the DUL has work queued, everything goes through the DUL."""

from __future__ import annotations

import queue
import socket
import ssl
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydicom.data import get_testdata_file
from pynetdicom import AE, evt
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from dimse import direct_send
from dimse.testing import dataset_bytes, free_port, stored_dataset, storescp

pytestmark = pytest.mark.usefixtures("patched_pynetdicom", "unlogged_pynetdicom")

EXPLICIT = "1.2.840.10008.1.2.1"
CT_SMALL = Path(str(get_testdata_file("CT_small.dcm")))


@pytest.fixture
def destination(tmp_path: Path):
    port = free_port()
    with storescp(tmp_path / "dest", port=port):
        yield port, tmp_path / "dest"


def _threads_seen(assoc: Any) -> dict[str, list[str]]:
    """Which threads wrote to and read from ``assoc``'s socket, by thread name."""
    seen: dict[str, list[str]] = {"sent": [], "received": []}
    assoc.bind(evt.EVT_DATA_SENT,
               lambda event: seen["sent"].append(threading.current_thread().name))
    assoc.bind(evt.EVT_PDU_RECV, lambda event: seen["received"].append(
        threading.current_thread().name) if isinstance(event.pdu, P_DATA_TF) else None)
    return seen


def _associate(port: int, *contexts: Any) -> Any:
    ae = AE(ae_title="PORTAL")
    for context in contexts:
        ae.add_requested_context(context, EXPLICIT)
    assoc = ae.associate("127.0.0.1", port, ae_title="DEST")
    assert assoc.is_established
    return assoc


def test_a_stored_object_is_written_and_its_response_read_by_the_sending_thread(destination):
    port, folder = destination
    assoc = _associate(port, CTImageStorage)
    seen = _threads_seen(assoc)
    stored = stored_dataset(CT_SMALL)
    meanwhile: list[tuple[int, int]] = []  # (writes, replies read) when it was called
    stored.meanwhile = lambda: meanwhile.append((len(seen["sent"]), len(seen["received"])))
    status = assoc.send_c_store(stored)
    seen = {key: list(names) for key, names in seen.items()}  # not the release's PDUs
    assert meanwhile == [(1, 0)]  # once, with the object written and its reply not read
    # The DUL's wait leaves the socket to this thread until it is given something to do:
    assert assoc.dul._portal_wake.blind
    assoc.release()  # the release request is queued: the DUL reads the reply to it
    assert assoc.is_released

    assert status.Status == 0x0000
    [received] = folder.iterdir()
    assert dataset_bytes(received) == dataset_bytes(CT_SMALL)
    here = threading.current_thread().name
    assert seen["sent"] == [here]  # the command and dataset, in one write
    assert seen["received"] == [here]  # the C-STORE response


def test_a_message_from_the_associations_thread_is_written_by_it_when_the_dul_is_idle(
        destination):
    port, _ = destination
    assoc = _associate(port, Verification)
    seen = _threads_seen(assoc)
    status = assoc.send_c_echo()
    seen = {key: list(names) for key, names in seen.items()}
    assoc.release()

    assert status.Status == 0x0000
    assert seen["sent"] == [threading.current_thread().name]
    assert seen["received"] == [assoc.dul.name]  # a plain request's reply: the DUL reads it


def test_with_the_dul_busy_the_object_goes_through_its_queue_and_arrives_the_same(
        destination, monkeypatch: pytest.MonkeyPatch):
    port, folder = destination
    monkeypatch.setattr(direct_send, "idle_socket", lambda dul: None)  # never idle
    assoc = _associate(port, CTImageStorage)
    seen = _threads_seen(assoc)
    status = assoc.send_c_store(stored_dataset(CT_SMALL))
    seen = {key: list(names) for key, names in seen.items()}
    assoc.release()

    assert status.Status == 0x0000
    [received] = folder.iterdir()
    assert dataset_bytes(received) == dataset_bytes(CT_SMALL)
    assert set(seen["sent"]) == {assoc.dul.name}
    assert seen["received"] == [assoc.dul.name]


def _dul(**overrides: Any) -> Any:
    """A DUL as :func:`direct_send.idle_socket` looks at it: idle in Sta6 unless told."""
    sock = socket.socket()
    fields: dict[str, Any] = {
        "socket": SimpleNamespace(socket=sock), "_kill_thread": False,
        "to_provider_queue": queue.Queue(), "event_queue": queue.Queue(),
        "state_machine": SimpleNamespace(current_state="Sta6")}
    fields.update(overrides)
    return SimpleNamespace(**fields)


def _queued(item: Any) -> queue.Queue[Any]:
    waiting: queue.Queue[Any] = queue.Queue()
    waiting.put(item)
    return waiting


@pytest.mark.parametrize(("case", "overrides"), [
    ("something queued to send", {"to_provider_queue": _queued("P-DATA")}),
    ("an event to act on", {"event_queue": _queued("Evt10")}),
    ("not in data transfer", {"state_machine": SimpleNamespace(current_state="Sta7")}),
    ("stopping", {"_kill_thread": True}),
    ("no connection", {"socket": None}),
    ("a TLS connection", {"socket": SimpleNamespace(
        socket=ssl.create_default_context().wrap_socket(
            socket.socket(), server_hostname="peer", do_handshake_on_connect=False))}),
])
def test_the_socket_is_left_to_the_dul_unless_it_is_idle_in_data_transfer(case, overrides):
    assert direct_send.idle_socket(_dul()) is not None
    assert direct_send.idle_socket(_dul(**overrides)) is None, case


def test_a_write_the_peer_never_reads_ends_at_the_network_timeout():
    ours, theirs = socket.socketpair()
    try:
        ours.setblocking(False)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            direct_send.send_all(ours, b"\0" * (64 << 20), timeout=0.2)
        assert time.monotonic() - started < 5
    finally:
        ours.close()
        theirs.close()


@pytest.fixture
def silent_peer():
    """A C-STORE SCP that answers only after a second."""
    ae = AE(ae_title="DEST")
    ae.add_supported_context(CTImageStorage, EXPLICIT)
    port = free_port()

    def store(event: Any) -> int:
        time.sleep(1.0)
        return 0x0000

    server = ae.start_server(("127.0.0.1", port), block=False,
                             evt_handlers=[(evt.EVT_C_STORE, store)])
    assert server is not None
    yield port
    server.shutdown()


def test_a_response_that_does_not_come_is_waited_for_once_for_the_dimse_timeout(silent_peer):
    assoc = _associate(silent_peer, CTImageStorage)
    assoc.dimse_timeout = 0.4
    started = time.monotonic()
    status = assoc.send_c_store(stored_dataset(CT_SMALL))
    waited = time.monotonic() - started

    assert "Status" not in status  # no response: pynetdicom aborts the association
    assert assoc.is_aborted
    assert 0.4 <= waited < 0.75  # once, not once here and again in get_msg
