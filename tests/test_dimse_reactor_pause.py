"""A C-STORE sub-operation's response reaches the sender, never the association's reactor.

pynetdicom pauses the reactor by clearing an event and waiting for the reactor's
``_is_paused`` flag, which the reactor raises just before it waits and lowers only after the
wait returns; a sender that clears the event in between goes on while the reactor polls the
message queue once more. Once in a CI run the reactor took a C-MOVE sub-operation's
response: the sub-operation failed on the DIMSE timeout. The reactor is slowed here at that
very point (between its wait and its poll), and the sender before it waits for the answer,
so that the race is lost every time it can be."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from dimse import direct_send, pynetdicom_patches, stored_send
from dimse.stored_send import ReactorCheckpoint
from dimse.testing import free_port, stored_dataset, storescp

EXPLICIT = "1.2.840.10008.1.2.1"
STRETCH = 0.1  # the reactor's turn between its wait and its poll, stretched to this


def _stretched(base: type) -> Any:
    """The reactor's checkpoint, with the reactor caught between its wait and its poll each
    time a sender pauses it: a wait that did not block lasts until the event is cleared,
    then :data:`STRETCH` more."""
    class Stretched(base):  # type: ignore[misc]
        def wait(self, timeout: float | None = None) -> bool:
            woken = bool(super().wait(timeout))
            self.turning.set()  # the reactor is on this checkpoint now
            deadline = time.monotonic() + 1
            while self.is_set() and time.monotonic() < deadline:
                time.sleep(0.001)
            if not self.is_set():
                time.sleep(STRETCH)
            return woken
    checkpoint = Stretched()
    checkpoint.turning = threading.Event()
    checkpoint.set()
    return checkpoint


def _slow_to_wait_for_the_answer(assoc: Association) -> None:
    get_msg = assoc.dimse.get_msg

    def late(block: bool = False) -> Any:
        if block:
            time.sleep(3 * STRETCH)  # the response is queued before the sender asks
        return get_msg(block=block)
    assoc.dimse.get_msg = late  # type: ignore[method-assign]


@pytest.fixture
def destination(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    with storescp(tmp_path / "dest", port=port, accept_all=True):
        yield port


def _associate(port: int, checkpoint: Any) -> Association:
    ae = AE(ae_title="PORTAL")
    ae.dimse_timeout = 1
    ae.add_requested_context(CTImageStorage, EXPLICIT)
    assoc = ae.associate("127.0.0.1", port, ae_title="DEST")
    assert assoc.is_established
    assoc._reactor_checkpoint = checkpoint
    assert checkpoint.turning.wait(2)
    _slow_to_wait_for_the_answer(assoc)
    return assoc


def _ct() -> tuple[Path, Dataset]:
    path = Path(str(get_testdata_file("CT_small.dcm")))
    return path, dcmread(path)


def _statuses(assoc: Association, datasets: list[Dataset]) -> list[int | None]:
    try:
        return [getattr(assoc.send_c_store(ds), "Status", None) for ds in datasets]
    finally:
        assoc.release()


def test_pynetdicoms_own_pause_lets_a_slow_reactor_take_the_response(destination, caplog):
    """What the listener's send mends: pynetdicom as it is loses the response here, as the
    CI run did (and then aborts the association)."""
    pynetdicom_patches.uninstall()
    _, ds = _ct()
    assoc = _associate(destination, _stretched(threading.Event))
    assert _statuses(assoc, [ds]) == [None]
    assert "Received unexpected C-STORE service message" in caplog.text


@pytest.mark.usefixtures("patched_pynetdicom")
def test_the_listeners_send_gets_every_response_from_a_slow_reactor(destination):
    path, ds = _ct()
    assoc = _associate(destination, _stretched(ReactorCheckpoint))
    sent = [stored_dataset(path), ds, stored_dataset(path), ds]  # as stored, and converted
    assert _statuses(assoc, sent) == [0x0000] * 4


@pytest.mark.usefixtures("patched_pynetdicom")
def test_the_listeners_send_puts_pynetdicoms_event_aside_for_one_that_knows(destination):
    path, _ = _ct()
    assoc = _associate(destination, _stretched(threading.Event))
    assert _statuses(assoc, [stored_dataset(path)]) == [0x0000]
    assert isinstance(assoc._reactor_checkpoint, ReactorCheckpoint)


def test_parking_waits_until_the_reactor_blocks_and_not_once_it_has_stopped():
    checkpoint = ReactorCheckpoint()
    parked = threading.Event()

    def park() -> None:
        checkpoint.park(lambda: True)
        parked.set()
    parker = threading.Thread(target=park)
    parker.start()
    assert not parked.wait(0.2)  # no reactor is waiting yet
    reactor = threading.Thread(target=checkpoint.wait)
    reactor.start()
    assert parked.wait(2)
    assert reactor.is_alive()  # and it stays blocked until the sender is done
    checkpoint.set()
    reactor.join(2)
    assert not reactor.is_alive()
    started = time.monotonic()
    checkpoint.park(lambda: False)  # a stopped reactor: nothing to wait for
    assert time.monotonic() - started < 0.1


def _counting_turns() -> Any:
    """A checkpoint that counts the reactor's turns through it."""
    class Counting(ReactorCheckpoint):
        turns = 0

        def wait(self, timeout: float | None = None) -> bool:
            woken = super().wait(timeout)
            type(self).turns += 1
            return woken
    return Counting()


@pytest.mark.usefixtures("patched_pynetdicom", "unlogged_pynetdicom")
def test_a_held_reactor_stays_paused_from_one_stored_object_to_the_next(destination):
    """A C-MOVE's sub-association (hold_reactor): its reactor does not run between the
    objects, yet every object gets its response; let go, it runs again."""
    path, _ = _ct()
    ae = AE(ae_title="PORTAL")
    ae.add_requested_context(CTImageStorage, EXPLICIT)
    assoc = ae.associate("127.0.0.1", destination, ae_title="DEST")
    assert assoc.is_established
    checkpoint = _counting_turns()
    assoc._reactor_checkpoint = checkpoint
    try:
        stored_send.hold_reactor(assoc, True)
        statuses = [assoc.send_c_store(stored_dataset(path)).Status]
        turns = type(checkpoint).turns
        statuses += [assoc.send_c_store(stored_dataset(path)).Status for _ in range(5)]
        assert statuses == [0x0000] * 6
        assert checkpoint.parked()
        assert type(checkpoint).turns == turns  # not one turn among the five sends
        stored_send.hold_reactor(assoc, False)
        deadline = time.monotonic() + 2
        while type(checkpoint).turns == turns and time.monotonic() < deadline:
            time.sleep(0.01)
        assert type(checkpoint).turns > turns
    finally:
        assoc.release()
    assert assoc.is_released


@pytest.mark.usefixtures("patched_pynetdicom", "unlogged_pynetdicom")
def test_a_held_reactor_takes_its_turn_when_the_peer_has_aborted_meanwhile():
    """The peer aborts between two objects and the DUL acts on it while the reactor is
    held: before the next object the reactor takes its turn, sees the abort and ends the
    association, so the send fails at once instead of writing to a closed association
    and waiting for an answer that cannot come."""
    path, _ = _ct()
    peer = AE(ae_title="DEST")
    peer.add_supported_context(CTImageStorage, EXPLICIT)
    port = free_port()
    server = peer.start_server(("127.0.0.1", port), block=False, evt_handlers=[
        (evt.EVT_C_STORE, lambda event: 0x0000)])
    assert server is not None
    try:
        ae = AE(ae_title="PORTAL")
        ae.dimse_timeout = 20
        ae.add_requested_context(CTImageStorage, EXPLICIT)
        assoc = ae.associate("127.0.0.1", port, ae_title="DEST")
        assert assoc.is_established
        stored_send.hold_reactor(assoc, True)
        assert assoc.send_c_store(stored_dataset(path)).Status == 0x0000
        server.active_associations[0].abort()
        direct_send.look_again(assoc)  # the DUL reads the peer's A-ABORT now
        deadline = time.monotonic() + 5
        while assoc.dul.state_machine.current_state == "Sta6" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert assoc.is_established  # the held reactor has not seen it yet
        started = time.monotonic()
        with pytest.raises(RuntimeError, match="must be established"):
            assoc.send_c_store(stored_dataset(path))
        assert time.monotonic() - started < 5
        assert assoc.is_aborted
    finally:
        server.shutdown()
