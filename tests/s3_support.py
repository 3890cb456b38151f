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
    restarted server is empty).

    ``keep_alive``: moto's application under gunicorn (one process, threads) instead,
    which keeps connections open between requests as a cloud endpoint does; moto_server
    opens a connection per request, a round trip more each over a slow link.
    """

    def __init__(self, port: int | None = None, host: str = "127.0.0.1",
                 keep_alive: bool = False) -> None:
        self.host = host
        self.port = port or free_port()
        self.url = f"http://{host}:{self.port}"
        self.keep_alive = keep_alive
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> MotoServer:
        bin_dir = Path(sys.executable).parent
        if self.keep_alive:
            argv = [str(bin_dir / "gunicorn"), "tests.moto_wsgi", "--bind",
                    f"{self.host}:{self.port}", "--workers", "1", "--worker-class", "gthread",
                    "--threads", "16", "--keep-alive", "75", "--timeout", "600",
                    "--chdir", str(Path(__file__).resolve().parent.parent)]
        else:
            argv = [str(bin_dir / "moto_server"), "-H", self.host, "-p", str(self.port)]
        self._process = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
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
