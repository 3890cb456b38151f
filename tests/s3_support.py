"""A real S3 endpoint for tests: moto in server mode on a loopback port.

:class:`MotoServer` can be stopped and started again on the same port (an outage of the
replica); ``s3_endpoint`` is one server for a whole test module. Import the fixture into a
test module to use it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MotoServer:
    """One ``moto_server`` process at a time on ``port`` (it keeps buckets in memory: a
    restarted server is empty)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> MotoServer:
        moto_server = Path(sys.executable).with_name("moto_server")
        self._process = subprocess.Popen(
            [str(moto_server), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline or self._process.poll() is not None:
                    self.stop()
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto in server mode: a real S3 API over HTTP on a free loopback port."""
    server = MotoServer().start()
    try:
        yield server.url
    finally:
        server.stop()
