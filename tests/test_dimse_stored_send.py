"""A stored object's C-STORE sub-operation as the listener sends it: the command set written
directly is the one pynetdicom writes, the dataset goes out as its stored bytes, and a
handler that looks at the requests sent still gets pynetdicom's message."""

from __future__ import annotations

import io
from pathlib import Path
from typing import IO, Any, cast

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pynetdicom import AE, evt
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from dimse import stored_send
from dimse.testing import dataset_bytes, free_port, stored_dataset, storescp

pytestmark = pytest.mark.usefixtures("patched_pynetdicom")

EXPLICIT = "1.2.840.10008.1.2.1"
CT = "1.2.840.10008.5.1.4.1.1.2"


def _request(instance_uid: str, originator: str | None, originator_id: int | None) -> C_STORE:
    req = C_STORE()
    req.MessageID, req.Priority = 5, 2
    req.AffectedSOPClassUID, req.AffectedSOPInstanceUID = CT, instance_uid
    req.MoveOriginatorApplicationEntityTitle = originator
    req.MoveOriginatorMessageID = originator_id
    return req


@pytest.mark.parametrize("instance_uid", ["1.2.3.45", "1.2.3.4"])  # odd and even lengths
@pytest.mark.parametrize(("originator", "originator_id"), [
    (None, None), ("DEST", 7), ("ABC", 3)])  # a C-GET's, and a C-MOVE's (even, odd AE)
def test_the_command_set_is_the_one_pynetdicom_writes(instance_uid, originator, originator_id):
    req = _request(instance_uid, originator, originator_id)
    req._dataset_path = (Path("a stored object"), 0)  # marks the data set
    message = C_STORE_RQ()
    message.primitive_to_message(req)
    assert stored_send.store_request_command(req) == encode(message.command_set, True, True)


def test_the_command_and_the_dataset_go_as_pdus_the_command_first():
    command = stored_send.store_request_command(_request("1.2.3.4", None, None))
    data = bytes(range(256)) * 100
    wire = b"".join(batch.wire for batch in stored_send.batches(
        io.BytesIO(data), 3, 4096, batch_bytes=8192,
        head=stored_send.command_pdu(command, 3)))
    values, offset = [], 0
    while offset < len(wire):
        length = int.from_bytes(wire[offset + 2:offset + 6], "big")
        pdu = P_DATA_TF()
        pdu.decode(wire[offset:offset + 6 + length])
        [item] = pdu.presentation_data_value_items
        assert item.presentation_data_value is not None
        values.append(item.presentation_data_value)
        offset += 6 + length
    assert values[0] == b"\x03" + command  # command information, its last fragment
    assert b"".join(value[1:] for value in values[1:]) == data
    assert [value[0] for value in values[1:]] == [0x00] * (len(values) - 2) + [0x02]


class _ShortReads(io.RawIOBase):
    """A source that gives at most 1000 bytes a read, as a network stream may."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._data.read(min(size, 1000) if size >= 0 else 1000)


def test_a_source_that_reads_short_still_goes_whole_its_last_fragment_flagged_once():
    data = bytes(range(256)) * 40
    source = cast(IO[bytes], _ShortReads(data))
    wire = b"".join(b.wire for b in stored_send.batches(source, 1, 4096))
    values, offset = [], 0
    while offset < len(wire):
        length = int.from_bytes(wire[offset + 2:offset + 6], "big")
        assert length <= 4096
        values.append(wire[offset + 11:offset + 6 + length])  # from the control header
        offset += 6 + length
    assert b"".join(value[1:] for value in values) == data
    assert [value[0] for value in values].count(0x02) == 1 and values[-1][0] == 0x02


@pytest.fixture
def destination(tmp_path: Path) -> Any:
    port = free_port()
    with storescp(tmp_path / "dest", port=port):
        yield port, tmp_path / "dest"


@pytest.mark.parametrize("watched", [False, True], ids=["unwatched", "watched"])
def test_a_stored_object_arrives_as_its_stored_bytes_and_a_watcher_sees_the_request(
        destination, watched: bool):
    port, folder = destination
    path = Path(str(get_testdata_file("CT_small.dcm")))
    ds = dcmread(path)
    seen: list[Any] = []
    handlers: list[Any] = [(evt.EVT_DIMSE_SENT, stored_send.responses_only(
        lambda event: None))]  # as the listener's operation counter is marked
    if watched:
        handlers.append((evt.EVT_DIMSE_SENT, lambda event: seen.append(event.message)))
    ae = AE(ae_title="PORTAL")
    ae.add_requested_context(CTImageStorage, EXPLICIT)
    assoc = ae.associate("127.0.0.1", port, ae_title="DEST", evt_handlers=handlers)
    assert assoc.is_established
    stored = stored_dataset(path)
    status = assoc.send_c_store(stored)
    assoc.release()
    assert status.Status == 0x0000
    [received] = folder.iterdir()
    assert dataset_bytes(received) == dataset_bytes(path)
    requests = [m for m in seen if isinstance(m, C_STORE_RQ)]
    if watched:
        assert [m.command_set.AffectedSOPInstanceUID for m in requests] == [ds.SOPInstanceUID]
    else:
        assert requests == []
    assert stored._portal_source.closed


def _fragments(wire: bytes) -> tuple[bytes, list[int], int]:
    """The data of P-DATA-TF PDUs of one PDV each, their message control headers, and the
    longest PDU."""
    data, controls, longest, offset = b"", [], 0, 0
    while offset < len(wire):
        length = int.from_bytes(wire[offset + 2:offset + 6], "big")
        longest = max(longest, length)
        controls.append(wire[offset + 11])
        data += wire[offset + 12:offset + 6 + length]
        offset += 6 + length
    return data, controls, longest


@pytest.mark.parametrize(("read_for", "sent_with"), [(16384, 16384), (0, 0), (0, 16384),
                                                    (16384, 4096)])
def test_a_first_block_read_ahead_goes_out_whole_within_the_peers_limit(read_for: int,
                                                                         sent_with: int):
    data = bytes(range(256)) * 9000  # 2.3 MB: a first block and more
    plain = b"".join(b.wire for b in stored_send.batches(io.BytesIO(data), 3, sent_with))
    stored = stored_send.StoredDataset(CT, "1.2.3.4", EXPLICIT, io.BytesIO(data))
    stored.read_first(read_for)
    ahead = b"".join(b.wire for b in stored_send.batches(stored._portal_source, 3, sent_with))
    if read_for == sent_with:
        assert ahead == plain  # the very PDUs
    sent, controls, longest = _fragments(ahead)
    assert sent == data
    assert controls == [0x00] * (len(controls) - 1) + [0x02]  # data set; the last flagged
    assert sent_with == 0 or longest <= sent_with
    stored.close()
    assert stored._portal_source.closed


@pytest.mark.parametrize("sizes", [[100, 5000, -1], [3 << 20], [1 << 20, 1 << 20, 1 << 20]])
def test_a_source_read_ahead_gives_its_bytes_in_order_to_reads_of_any_size(sizes: list[int]):
    """Whatever reads a stored object after its first block was read ahead (pynetdicom's own
    message when someone watches the requests sent) gets the same bytes."""
    data = bytes(range(256)) * 9000
    source = stored_send.ReadAhead(data[:16378 * 64], io.BytesIO(data[16378 * 64:]))
    assert b"".join(source.read(size) for size in sizes) + source.read() == data
    assert source.read(10) == b""
def test_the_context_of_a_stored_object_is_looked_up_once_per_association_and_syntax(
        destination, monkeypatch: pytest.MonkeyPatch):
    from pynetdicom.association import Association

    port, folder = destination
    looked_up: list[tuple[str, str]] = []
    pynetdicoms = Association._get_valid_context

    def counted(self: Any, ab_syntax: Any, tr_syntax: Any, *args: Any, **kwargs: Any) -> Any:
        looked_up.append((str(ab_syntax), str(tr_syntax)))
        return pynetdicoms(self, ab_syntax, tr_syntax, *args, **kwargs)

    monkeypatch.setattr(Association, "_get_valid_context", counted)
    path = Path(str(get_testdata_file("CT_small.dcm")))
    ae = AE(ae_title="PORTAL")
    ae.add_requested_context(CTImageStorage, EXPLICIT)
    assoc = ae.associate("127.0.0.1", port, ae_title="DEST")
    assert assoc.is_established
    statuses = [assoc.send_c_store(stored_dataset(path)).Status for _ in range(3)]
    assoc.release()
    assert statuses == [0x0000] * 3
    assert looked_up.count((CT, EXPLICIT)) == 1
    assert len(list(folder.iterdir())) == 1  # the same object three times, kept once
