"""Helpers for tests and benchmarks: a listener on a free port, DCMTK tools, byte checks.

Like pynetdicom's own tests: a real SCP on a real socket, driven by real DICOM clients.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pynetdicom.dsutils import split_dataset

from audit import writer

from .handlers import Listener
from .server import start
from .stored_send import StoredDataset

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def dcmtk_env() -> dict[str, str]:
    """DCMTK leaves Nagle's algorithm on unless told (see docs on TCP_NODELAY)."""
    return {**os.environ, "TCP_NODELAY": "1"}


def dcmtk(
    *args: str, cwd: Path | None = None, timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), env=dcmtk_env(), cwd=cwd, capture_output=True, text=True, timeout=timeout,
        check=False,
    )


@dataclass(frozen=True)
class RunningListener:
    ae_title: str
    host: str
    port: int
    listener: Listener

    def address(self) -> list[str]:
        return [self.host, str(self.port)]

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until every association has ended and its audit entries are written."""
        deadline = time.monotonic() + timeout
        while len(self.listener.sessions) and time.monotonic() < deadline:
            time.sleep(0.02)


@contextmanager
def running_listener(
    ae_title: str = "PORTAL", *, network_timeout: float = 30.0, patches: bool | None = None,
) -> Iterator[RunningListener]:
    """The portal's listener in a thread of this process, on a free loopback port;
    ``patches``: with the pynetdicom patches or without (by default as configured)."""
    port = free_port()
    listener = Listener(ae_title=ae_title, network_timeout=network_timeout)
    server = start(listener, LOOPBACK, port, block=False, patches=patches)
    assert server is not None
    try:
        yield RunningListener(ae_title, LOOPBACK, port, listener)
    finally:
        server.shutdown()
        writer.flush(10.0)  # as a listener process does when it stops


@contextmanager
def storescp(folder: Path, ae_title: str = "DEST", port: int | None = None, *,
             accept_all: bool = True) -> Iterator[int]:
    """DCMTK's storescp accepting every transfer syntax it knows (+xa; ``accept_all``
    False: the uncompressed ones only, its default) and writing what it receives, bit for
    bit (+B), into ``folder``."""
    port = port or free_port()
    folder.mkdir(parents=True, exist_ok=True)
    syntaxes = ["+xa"] if accept_all else []
    process = subprocess.Popen(
        ["storescp", "-aet", ae_title, "+B", *syntaxes, "-od", str(folder), str(port)],
        env=dcmtk_env(), cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def _wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if sock.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


def dataset_bytes(path: Path) -> bytes:
    """The encoded dataset of a Part 10 file, without its File Meta Information: what goes
    over the wire, and what must come back unchanged."""
    _, offset = split_dataset(path)
    with open(path, "rb") as fp:
        fp.seek(offset)
        return fp.read()


def stored_dataset(path: Path) -> StoredDataset:
    """A Part 10 file as the listener's retrieve sends it: its dataset bytes, undecoded
    (from memory, positioned after the File Meta)."""
    from imaging.dicomfile import dataset_offset

    meta = dcmread(path, stop_before_pixels=True)
    source = io.BytesIO(path.read_bytes())
    source.seek(dataset_offset(source))
    return StoredDataset(meta.SOPClassUID, meta.SOPInstanceUID,
                         str(meta.file_meta.TransferSyntaxUID), source)
