"""C-STORE sub-operations that send a stored object's dataset bytes as they are stored.

pynetdicom sends a C-GET or C-MOVE match by encoding the :class:`~pydicom.dataset.Dataset`
the handler yields: the listener had to read each object with pydicom and pynetdicom
encoded it again, element by element, in memory (about 3 ms a CT slice, a quarter of the
time of a retrieve). When the requester accepted the very transfer syntax an object is
stored in, nothing needs decoding: the bytes after its File Meta are what goes over the
wire. :mod:`dimse.retrieve` then yields a :class:`StoredDataset` (the UIDs that pick the
presentation context, and the open blob), and with :func:`install` (called by
:mod:`dimse.pynetdicom_patches`, never on import) pynetdicom sends it in fragments read
from the blob as they go out. Every other dataset goes through pynetdicom's own
``send_c_store``, once the association's reactor is paused for sure
(:class:`ReactorCheckpoint`: pynetdicom's own pause can let the reactor take the response).

A peer's maximum PDU length is often small (DCMTK's 16 KiB: 32 PDUs a CT slice), and each
PDU pynetdicom sends costs a queue hand-off to its DUL thread, a state-machine event and a
socket call, which capped a retrieve near 90 MB/s. The stored bytes therefore go to the DUL
as :class:`BatchedPData`: about :data:`BATCH_BYTES` of ready-encoded P-DATA-TF PDUs, each
within the peer's limit, that the DUL's DT-1 action (replaced by :func:`dt_1`) writes to the
socket in one call. The wire carries the same PDUs (PS3.8 9.3.5) in the same order.
When the DUL thread is idle, the association's thread writes the batches and reads the
response itself (:func:`dimse.direct_send.exchange`), one batch in memory at a time.
Otherwise at most :data:`BATCHES_IN_FLIGHT` batches wait for the DUL (:func:`windowed`): the DUL's
queue has no bound, and a peer reading slower than the blob reads (a workstation writing to
its disk) had most of a large object queued in memory at once, half of a 256 MiB one in
bench/big_study.py.

It relies on pynetdicom 3.0.4's call sites (tests/test_dimse_pynetdicom_call_sites.py):
``send_c_store``'s parameters and its pause, send and wait sequence, which is followed
here; ``DIMSEMessage.primitive_to_message`` carrying the primitive's ``_dataset_path``
(pynetdicom's own way to send a dataset from a file) into the message, which marks the
command as having a data set; and the Get and Move SCPs calling ``send_c_store`` with any
:class:`~pydicom.dataset.Dataset` they were given.
"""

from __future__ import annotations

import io
import struct
import threading
from collections.abc import Callable, Iterator
from typing import IO, Any, cast

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID
from pynetdicom import evt, fsm
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ, DIMSEMessage
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from . import direct_send, dul_wakeup
from .patching import originals, restore
from .pdu_fast_codec import C_STORE_RQ_COMMAND, implicit_element, padded

# Fragments read when the peer sets no maximum PDU length (0: unlimited).
UNLIMITED_FRAGMENT = 1024 * 1024
#: About this many bytes of PDUs go to the DUL (and the socket) at once.
BATCH_BYTES = 1024 * 1024
#: At most this many batches are handed to the DUL and not yet written to the socket.
BATCHES_IN_FLIGHT = 4
_PDU_HEADER = struct.Struct(">BBIIBB")  # type, reserved, PDU length, PDV length, id, control
_HAS_DATASET = 0x0001  # pynetdicom's value; anything but 0x0101 says so (PS3.7 E.1)


class StoredDataset(Dataset):
    """A stored object, to be sent as its encoded dataset reads from ``source``.

    Only what pynetdicom looks at is decoded: the SOP Class and Instance UIDs (from the
    index) and the transfer syntax, which must be the one the dataset is encoded in.
    ``source`` is positioned at the dataset; it is closed once the object is sent (or by
    :meth:`close`, when the retrieve ends before it is).
    """

    def __init__(self, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str,
                 source: IO[bytes]) -> None:
        super().__init__()
        self.SOPClassUID = sop_class_uid
        self.SOPInstanceUID = sop_instance_uid
        self.file_meta = FileMetaDataset()
        self.file_meta.TransferSyntaxUID = UID(transfer_syntax)
        self._portal_source = source
        # Called while the peer answers this object's sub-operation (read the next one).
        self.meanwhile: Callable[[], None] | None = None

    def read_first(self, max_pdu_length: int) -> None:
        """Read the first block :func:`batches` reads for a peer of this maximum PDU length
        now, ahead of the send: the source then gives it back first, whatever sends it."""
        source = self._portal_source
        self._portal_source = cast(IO[bytes], ReadAhead(
            source.read(block_size(max_pdu_length)), source))

    def close(self) -> None:
        self._portal_source.close()


class ReadAhead(io.RawIOBase):
    """A source whose first ``block`` was read ahead: reads give that block first, then
    what follows in ``rest``."""

    def __init__(self, block: bytes, rest: IO[bytes]) -> None:
        super().__init__()
        self._block = block
        self._rest = rest

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None:
            size = -1
        if not self._block:
            return self._rest.read(size)
        if size < 0:
            data, self._block = self._block + self._rest.read(), b""
            return data
        data, self._block = self._block[:size], self._block[size:]
        return data

    def close(self) -> None:
        super().close()
        self._rest.close()


class _StoredPayload(tuple):  # type: ignore[type-arg]
    """What the C-STORE message carries in pynetdicom's ``_dataset_path`` slot: truthy, as
    pynetdicom needs to mark the command as having a data set, and never a path."""

    source: IO[bytes]
    running: Callable[[], bool]


def _payload(source: IO[bytes], running: Callable[[], bool]) -> _StoredPayload:
    payload = _StoredPayload(("<stored object>", 0))
    payload.source = source
    payload.running = running
    return payload


class ReactorCheckpoint:
    """pynetdicom's reactor checkpoint (a :class:`threading.Event` in its interface) that
    also tells when the reactor is blocked on it.

    pynetdicom pauses an association's reactor by clearing the event and waiting for the
    reactor's ``_is_paused`` flag; but the reactor sets that flag just before it waits and
    clears it only after the wait returns, so a sender that clears the event in between sees
    the flag up while the reactor goes on to poll the message queue once more, and it may
    take the C-STORE response the sender waits for (it is then dropped as "unexpected" and
    the sub-operation fails on the DIMSE timeout: seen once in CI). :meth:`park` waits
    until the reactor is inside :meth:`wait` with the event clear, where it stays until
    :meth:`set`.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._flag = True
        self._waiting = 0
        self._passed = 0  # waits that returned with the event set: the reactor's turns

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        with self._condition:
            self._flag = True
            self._condition.notify_all()

    def clear(self) -> None:
        with self._condition:
            self._flag = False

    def wait(self, timeout: float | None = None) -> bool:
        with self._condition:
            self._waiting += 1
            self._condition.notify_all()
            try:
                woken = self._condition.wait_for(lambda: self._flag, timeout)
                if woken:
                    self._passed += 1
                    self._condition.notify_all()
                return woken
            finally:
                self._waiting -= 1

    def let_pass(self, running: Any, poll: float = 0.05) -> None:
        """Set the event and return once the reactor has gone past it (a turn of its loop
        starts), or as soon as ``running()`` is false."""
        with self._condition:
            passed = self._passed
            self._flag = True
            self._condition.notify_all()
            while self._passed == passed and running():
                self._condition.wait(poll)

    def parked(self) -> bool:
        """The reactor waits here and stays until :meth:`set`."""
        with self._condition:
            return not self._flag and self._waiting > 0

    def park(self, running: Any, nudge: Any = None, poll: float = 0.05) -> None:
        """Clear the event and return once a thread waits on it (while holding the lock,
        a waiter with the flag clear can only be blocked in the condition), or as soon as
        ``running()`` is false (the reactor has stopped: nothing is left to pause).

        ``nudge()`` cuts the reactor's idle wait short, so it comes to the checkpoint now
        rather than at the end of its poll: a C-MOVE's sub-operations each wait for it.
        A reactor parked already (held between a C-MOVE's objects: hold_reactor) is left
        as it is, not nudged."""
        if self.parked():
            return
        with self._condition:
            self._flag = False
        while True:
            if nudge is not None:
                nudge()
            with self._condition:
                if self._waiting or not running():
                    return
                self._condition.wait(poll)


def pause_reactor(assoc: Association) -> None:
    """Pause ``assoc``'s reactor so that it cannot take a message off the queue, and know it
    is paused. A send from the reactor's own thread (a C-GET's sub-operations run in its
    handler) needs no pause: the reactor is not polling then."""
    if threading.current_thread() is assoc:
        assoc._reactor_checkpoint.clear()
        return
    checkpoint: Any = assoc._reactor_checkpoint
    if not isinstance(checkpoint, ReactorCheckpoint):
        # The reactor reads the attribute at each turn; the old event stays set, so a turn
        # already past it ends at the next one, on this checkpoint.
        checkpoint = ReactorCheckpoint()
        assoc._reactor_checkpoint = checkpoint
    checkpoint.park(lambda: assoc.is_alive() and not assoc._kill,
                    lambda: dul_wakeup.nudge(assoc))


def hold_reactor(assoc: Association, on: bool) -> None:
    """Keep ``assoc``'s reactor paused from one stored object sent to the next (``on``),
    or let it run again (off). A C-MOVE's sub-association is written and read by the
    requester's association thread (the retrieve's sub-operations); its own reactor has
    nothing to do between them but take its turn, and pausing it again for each object
    cost a hand-over between the two threads. :func:`send_c_store` lets it take a turn
    whenever the DUL is not idle (the peer released or aborted, something queued), so it
    still acts on those as it would have."""
    assoc._portal_hold_reactor = on  # type: ignore[attr-defined]
    if not on:
        assoc._reactor_checkpoint.set()


def _held(assoc: Association) -> bool:
    return bool(getattr(assoc, "_portal_hold_reactor", False))


def _reactor_turn(assoc: Association) -> None:
    """One turn of a held reactor: it sees what the DUL has for it (an abort, a release)
    before anything is sent, and is paused again."""
    checkpoint: Any = assoc._reactor_checkpoint
    if isinstance(checkpoint, ReactorCheckpoint):
        checkpoint.let_pass(lambda: assoc.is_alive() and not assoc._kill)
    else:
        checkpoint.set()
    pause_reactor(assoc)


class BatchedPData(P_DATA):
    """Several P-DATA-TF PDUs, already encoded (``wire``): the DUL takes it as one P-DATA
    request (Evt9) and :func:`dt_1` sends the bytes as they are."""

    def __init__(self, wire: bytes, count: int) -> None:
        super().__init__()
        self.wire = wire
        self.count = count
        self.sent: Callable[[], None] | None = None  # called by dt_1 once written


def windowed(batches: Iterator[BatchedPData], running: Callable[[], bool],
             window: int = BATCHES_IN_FLIGHT) -> Iterator[BatchedPData]:
    """``batches``, each one only once fewer than ``window`` given before it are still
    unsent, so the DUL's queue (unbounded) holds at most ``window`` batches of an object.
    Ends early when ``running()`` turns false: a DUL that stopped sends nothing more."""
    slots = threading.Semaphore(window)
    for batch in batches:
        while not slots.acquire(timeout=0.1):
            if not running():
                return
        batch.sent = slots.release
        yield batch


def _dul_running(assoc: Association) -> Callable[[], bool]:
    dul: Any = assoc.dul
    return lambda: bool(dul.is_alive() and not dul._kill_thread)


def _fragment_size(max_pdu_length: int) -> int:
    return max_pdu_length - 6 if max_pdu_length else UNLIMITED_FRAGMENT


def block_size(max_pdu_length: int, batch_bytes: int = BATCH_BYTES) -> int:
    """How much of the source :func:`batches` reads at a time: whole fragments."""
    size = _fragment_size(max_pdu_length)
    return size * max(1, batch_bytes // size)


def batches(source: IO[bytes], context_id: int, max_pdu_length: int,
            batch_bytes: int = BATCH_BYTES, head: bytes = b"") -> Iterator[BatchedPData]:
    """The dataset as P-DATA-TF PDUs of one PDV each, at most ``max_pdu_length`` long
    (PS3.8 9.3.5 and E.2: 6 bytes of the PDU's maximum go to the PDV header), the last one
    flagged, gathered into batches of about ``batch_bytes``, ``head`` (encoded PDUs: the
    command's) in front of the first.

    The source is read a batch at a time and cut into fragments in memory: one read per
    batch rather than one per PDU. Only an empty read ends it (a short one may not).
    """
    size = _fragment_size(max_pdu_length)
    read_size = block_size(max_pdu_length, batch_bytes)
    block = source.read(read_size)
    parts: list[bytes | memoryview] = [head] if head else []
    count = 1 if head else 0
    while True:
        following = source.read(read_size) if block else b""
        view = memoryview(block)
        for start in range(0, len(view), size):
            chunk = view[start:start + size]
            last = not following and start + size >= len(view)
            control = 0x02 if last else 0x00  # data set; 0x02 on the last fragment
            parts.append(_PDU_HEADER.pack(0x04, 0, len(chunk) + 6, len(chunk) + 2,
                                          context_id, control))
            parts.append(chunk)
            count += 1
        if not block:  # an empty dataset: one empty last fragment
            parts.append(_PDU_HEADER.pack(0x04, 0, 6, 2, context_id, 0x02))
            count += 1
        if parts:
            yield BatchedPData(b"".join(parts), count)
        if not following:
            return
        parts, count, block = [], 0, following


def store_request_command(req: C_STORE) -> bytes:
    """The command set of a C-STORE-RQ with a data set (PS3.7 9.3.1.1, Implicit VR Little
    Endian) as pynetdicom encodes it from ``req``, written directly: pynetdicom builds and
    encodes it through pydicom, element by element, a third of a sub-operation's time."""
    body = implicit_element(0x00000002, padded(str(req.AffectedSOPClassUID)))
    body += implicit_element(0x00000100, struct.pack("<H", C_STORE_RQ_COMMAND))
    body += implicit_element(0x00000110, struct.pack("<H", req.MessageID))
    body += implicit_element(0x00000700, struct.pack("<H", req.Priority))
    body += implicit_element(0x00000800, struct.pack("<H", _HAS_DATASET))
    body += implicit_element(0x00001000, padded(str(req.AffectedSOPInstanceUID)))
    if req.MoveOriginatorApplicationEntityTitle is not None:
        body += implicit_element(0x00001030, padded(
            str(req.MoveOriginatorApplicationEntityTitle), b" "))
    if req.MoveOriginatorMessageID is not None:
        body += implicit_element(0x00001031, struct.pack("<H", req.MoveOriginatorMessageID))
    return implicit_element(0x00000000, struct.pack("<L", len(body))) + body


def command_pdu(command: bytes, context_id: int) -> bytes:
    """A command set as one P-DATA-TF PDU (message control header 0x03: command, last)."""
    return _PDU_HEADER.pack(0x04, 0, len(command) + 6, len(command) + 2, context_id,
                            0x03) + command


def dt_1(dul: Any) -> str:
    """pynetdicom's DT-1 (Sta6 + Evt9: send a P-DATA-TF PDU), and for a
    :class:`BatchedPData` its PDUs as they are, in one socket call."""
    primitive = dul.to_provider_queue.get(False)
    if not isinstance(primitive, BatchedPData):
        dul._send(P_DATA_TF(primitive))
        return "Sta6"
    try:
        if dul.socket is not None:
            dul.socket.send(primitive.wire)
    finally:
        if primitive.sent is not None:
            primitive.sent()
    return "Sta6"


def _encode_msg(self: C_STORE_RQ, context_id: int, max_pdu_length: int) -> Iterator[P_DATA]:
    payload = getattr(self, "_data_set_path", None)
    if not isinstance(payload, _StoredPayload):
        yield from DIMSEMessage.encode_msg(self, context_id, max_pdu_length)
        return
    # pynetdicom's own encoding for the command set (no data set is set, so it stops
    # there), then the stored bytes.
    self._data_set_path = None
    try:
        yield from DIMSEMessage.encode_msg(self, context_id, max_pdu_length)
    finally:
        self._data_set_path = payload
    yield from windowed(batches(payload.source, context_id, max_pdu_length), payload.running)


_pynetdicom_send_c_store = Association.send_c_store


def stored_context(assoc: Association, sop_class_uid: str, transfer_syntax: str) -> int:
    """The ID of the context ``assoc`` sends this SOP class in exactly this transfer syntax
    under, as pynetdicom picks it (only the stored syntax: these bytes cannot be converted
    on the way); looked up once per association and pair, not once per object (a getscu
    association accepts about a hundred contexts, each looked at every time)."""
    found: dict[tuple[str, str], int] = vars(assoc).setdefault("_portal_stored_contexts", {})
    key = (sop_class_uid, transfer_syntax)
    context_id = found.get(key)
    if context_id is None:
        context = assoc._get_valid_context(sop_class_uid, transfer_syntax, "scu",
                                           allow_conversion=False)
        context_id = found[key] = cast(int, context.context_id)
    return context_id


def responses_only(handler: Any) -> Any:
    """Mark an ``EVT_DIMSE_SENT`` handler that ignores requests (the listener's operation
    counter): a stored object's C-STORE-RQ is then sent without building the pynetdicom
    message it would be shown."""
    handler.responses_only = True
    return handler


def _requests_watched(assoc: Association) -> bool:
    handlers = cast(list[tuple[Any, Any]], assoc.get_handlers(evt.EVT_DIMSE_SENT))
    return any(not getattr(handler, "responses_only", False) for handler, _ in handlers)


def send_c_store(
    self: Association,
    dataset: Any,
    msg_id: int = 1,
    priority: int = 2,
    originator_aet: str | None = None,
    originator_id: int | None = None,
) -> Dataset:
    """``Association.send_c_store``; a :class:`StoredDataset` goes out as it is stored. Either
    way the reactor is paused for sure first (:class:`ReactorCheckpoint`)."""
    if not isinstance(dataset, StoredDataset):
        pause_reactor(self)  # pynetdicom's own pause then finds it paused
        try:
            return _pynetdicom_send_c_store(self, dataset, msg_id, priority, originator_aet,
                                            originator_id)
        finally:
            self._reactor_checkpoint.set()  # also where pynetdicom raised before its pause
    held, clean = _held(self), False
    done = direct_send.Exchange(sent=False)
    try:
        if held and direct_send.idle_socket(self.dul) is None:
            _reactor_turn(self)
        if not self.is_established:
            raise RuntimeError("The association with a peer SCP must be established "
                               "before sending a C-STORE request")
        req = C_STORE()
        req.MessageID = msg_id
        req.Priority = priority
        req.MoveOriginatorApplicationEntityTitle = originator_aet
        req.MoveOriginatorMessageID = originator_id
        req.AffectedSOPClassUID = dataset.SOPClassUID
        req.AffectedSOPInstanceUID = dataset.SOPInstanceUID
        context_id = stored_context(self, dataset.SOPClassUID,
                                    dataset.file_meta.TransferSyntaxUID)
        max_pdu = self.dimse.maximum_pdu_size
        command = store_request_command(req)
        # As pynetdicom does: pause the reactor, send, wait for the response.
        pause_reactor(self)
        try:
            if _requests_watched(self) or (max_pdu and len(command) + 6 > max_pdu):
                # Someone looks at the requests sent (pynetdicom's debug log does), or the
                # peer's PDUs are too small for the command: pynetdicom's message, in full.
                req._dataset_path = _payload(dataset._portal_source, _dul_running(self))
                self.dimse.send_msg(req, context_id)
            else:
                stored = batches(dataset._portal_source, context_id, max_pdu,
                                 head=command_pdu(command, context_id))
                done = direct_send.exchange(self, (batch.wire for batch in stored),
                                            meanwhile=dataset.meanwhile)
                if not done.sent:
                    for batch in windowed(stored, _dul_running(self)):
                        self.dul.send_pdu(batch)
            _, rsp = self.dimse.get_msg(block=not done.waited_out)
            # Held for the next object only after a clean exchange: anything else is
            # the reactor's to see at once.
            clean = done.sent and rsp is not None
        finally:
            if not held:
                self._reactor_checkpoint.set()
    finally:
        dataset.close()
        if held and not clean:  # also where it raised before its exchange
            self._reactor_checkpoint.set()
    if rsp is None:
        self._handle_no_response()
        return Dataset()
    return self._check_received_status(rsp)


def install() -> None:
    """Have pynetdicom send :class:`StoredDataset` objects as stored. Idempotent.

    Changed in place (the classes pynetdicom instantiates and looks up by name)."""
    setattr(Association, "send_c_store", send_c_store)  # noqa: B010
    setattr(C_STORE_RQ, "encode_msg", _encode_msg)  # noqa: B010
    description, _, state = _PYNETDICOM_DT_1
    fsm.ACTIONS["DT-1"] = (description, dt_1, state)


_ORIGINALS = originals((
    (Association, "send_c_store"),
    (C_STORE_RQ, "encode_msg"),
))


_PYNETDICOM_DT_1 = fsm.ACTIONS["DT-1"]


def uninstall() -> None:
    """pynetdicom's own ``send_c_store`` and DT-1 again. Idempotent."""
    restore(_ORIGINALS)
    fsm.ACTIONS["DT-1"] = _PYNETDICOM_DT_1


def installed() -> bool:
    return vars(Association).get("send_c_store") is send_c_store
