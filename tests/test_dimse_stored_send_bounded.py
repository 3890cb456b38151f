"""A large stored object sent to a peer that reads slowly is never queued whole in memory:
at most a few batches of its PDUs wait for pynetdicom's DUL thread at any moment, however
far the blob's reads run ahead of the peer (dimse.stored_send.windowed), and none when the
sending thread writes them itself (dimse.direct_send).

Without the bound, the DUL's queue took batches as fast as the blob was read: a C-GET of a
256 MiB object to a workstation writing to its disk held half of it in the listener."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from dimse import direct_send, stored_send
from dimse.testing import free_port
from imaging.dicomfile import dataset_offset

pytestmark = pytest.mark.usefixtures("patched_pynetdicom", "unlogged_pynetdicom")

EXPLICIT = "1.2.840.10008.1.2.1"
PIXELS = 32 << 20  # 32 MiB: eight times what the window lets wait


@pytest.fixture
def large_file(tmp_path: Path) -> Path:
    ds = dcmread(str(get_testdata_file("CT_small.dcm")))
    ds.Rows = ds.Columns = 4096
    ds.PixelData = bytes(range(256)) * (PIXELS // 256)
    path = tmp_path / "large.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def slow_peer():
    """A C-STORE SCP that dawdles over every PDU it reads (16 of them a MiB), recording
    the length of the pixel data of each object it receives."""
    received: list[int] = []

    def store(event: Any) -> int:
        received.append(len(event.dataset.PixelData))
        return 0x0000

    ae = AE(ae_title="SLOW")
    ae.maximum_pdu_size = 64 << 10
    ae.add_supported_context(CTImageStorage, EXPLICIT)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[
        (evt.EVT_C_STORE, store), (evt.EVT_DATA_RECV, lambda event: time.sleep(0.001))])
    assert server is not None
    yield port, received
    server.shutdown()


@pytest.mark.parametrize("dul_busy", [True, False], ids=["through-the-dul", "written-here"])
def test_a_large_object_to_a_slow_peer_has_at_most_the_window_queued_and_arrives_whole(
        large_file, slow_peer, dul_busy: bool, monkeypatch: pytest.MonkeyPatch):
    """Through the DUL's queue (its thread had work when the send began), at most the
    window waits; written by the sending thread itself (dimse.direct_send), nothing does."""
    if dul_busy:
        monkeypatch.setattr(direct_send, "idle_socket", lambda dul: None)
    port, received = slow_peer
    ae = AE(ae_title="PORTAL")
    ae.add_requested_context(CTImageStorage, EXPLICIT)
    assoc = ae.associate("127.0.0.1", port, ae_title="SLOW")
    assert assoc.is_established
    meta = dcmread(large_file, stop_before_pixels=True)
    source = large_file.open("rb")
    source.seek(dataset_offset(source))
    stored = stored_send.StoredDataset(meta.SOPClassUID, meta.SOPInstanceUID, EXPLICIT, source)

    queued: list[int] = []
    sending = threading.Event()

    def watch() -> None:  # the bytes of batches waiting in the DUL's queue, sampled
        while not sending.is_set():
            waiting = list(assoc.dul.to_provider_queue.queue)
            queued.append(sum(len(p.wire) for p in waiting
                              if isinstance(p, stored_send.BatchedPData)))
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        status = assoc.send_c_store(stored)
    finally:
        sending.set()
        watcher.join()
    assoc.release()

    assert status.Status == 0x0000
    assert received == [PIXELS]
    assert len(queued) > 20  # the watcher saw the send under way
    # BATCHES_IN_FLIGHT batches of about BATCH_BYTES (4 of 1 MiB), a quarter of the object
    assert max(queued) <= PIXELS / 4
    assert (max(queued) > 0) is dul_busy
