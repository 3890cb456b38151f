"""A throw-away Orthanc for benchmarks: its own storage, free ports, loopback only.

Orthanc 1.10 has no bind-address option and its DICOM port listens on every interface, so
the server runs under a tiny ``LD_PRELOAD`` shim, compiled on the fly with gcc, that rewrites
``bind()`` on the wildcard address to loopback. ``TCP_NODELAY=1`` is set in its environment
because Debian's DCMTK otherwise leaves Nagle's algorithm on and stores ~10x slower.

Usage::

    with OrthancServer() as orthanc:
        requests.post(f"{orthanc.url}/instances", data=...)
        subprocess.run(["storescu", "-aec", orthanc.aet, "127.0.0.1", str(orthanc.dicom_port), ...])

Later benchmarks (DICOMweb, C-STORE, C-FIND) reuse this module.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from peak_rss import peak_rss_kib

ORTHANC_BINARY = os.environ.get("ORTHANC_BINARY", "/usr/sbin/Orthanc")
PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc")

BIND_SHIM_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

/* Rewrite bind() on the wildcard address to loopback, so a server without a bind-address
   option (Orthanc's DICOM port) is reachable from this machine only. */
typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static bind_fn real_bind = 0;
    if (!real_bind) real_bind = (bind_fn)dlsym(RTLD_NEXT, "bind");
    if (addr && addr->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        struct sockaddr_in a;
        memcpy(&a, addr, sizeof a);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return real_bind(fd, (const struct sockaddr *)&a, sizeof a);
    }
    if (addr && addr->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 a;
        memcpy(&a, addr, sizeof a);
        a.sin6_addr = in6addr_loopback;
        return real_bind(fd, (const struct sockaddr *)&a, sizeof a);
    }
    return real_bind(fd, addr, len);
}
"""


def stop_process(process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """Terminate a server the benchmark started; kill it if it does not go in time."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_sql(server_url: str, statement: str, database: str = "postgres") -> None:
    """One statement, outside a transaction (CREATE/DROP DATABASE, VACUUM), on
    ``server_url`` (``postgres://user@host:port``)."""
    import psycopg

    with psycopg.connect(f"{server_url}/{database}", autocommit=True) as conn:
        conn.execute(statement)  # type: ignore[arg-type]


def free_port() -> int:
    """A TCP port free on loopback right now (there is a small race; fine for benchmarks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_dicomweb_plugin() -> Path | None:
    for folder in PLUGIN_DIRS:
        for path in sorted(Path(folder).glob("libOrthancDicomWeb.so*")):
            if path.is_file():
                return path
    return None


def build_bind_shim(folder: Path) -> Path:
    """Compile the loopback ``bind()`` shim into ``folder``; returns the .so path."""
    source = folder / "bind_loopback.c"
    library = folder / "bind_loopback.so"
    source.write_text(BIND_SHIM_C)
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O2", "-o", str(library), str(source), "-ldl"],
        check=True, capture_output=True,
    )
    return library


class OrthancServer:
    """Start a private Orthanc in a temporary folder; stop it and remove the folder on exit.

    Parameters mirror the few settings a benchmark varies; everything else is Orthanc's
    default (SQLite index, no storage compression), as a site would run it out of the box.
    """

    def __init__(
        self,
        *,
        aet: str = "ORTHANC",
        dicomweb: bool = True,
        extra_config: dict[str, object] | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.aet = aet
        self.dicomweb_plugin = find_dicomweb_plugin() if dicomweb else None
        self.extra_config = extra_config or {}
        self.startup_timeout = startup_timeout
        self.http_port = 0
        self.dicom_port = 0
        self.workdir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def storage_dir(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "storage"

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "orthanc.log"

    def config(self) -> dict[str, object]:
        config: dict[str, object] = {
            "Name": "bench",
            "StorageDirectory": str(self.storage_dir),
            "IndexDirectory": str(self.storage_dir),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpDescribeErrors": True,
            "SaveJobs": False,
            "Plugins": [],
        }
        if self.dicomweb_plugin is not None:
            config["Plugins"] = [str(self.dicomweb_plugin)]
            config["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/"}
        config.update(self.extra_config)
        return config

    def start(self) -> OrthancServer:
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-orthanc-"))
        try:
            self.http_port = free_port()
            self.dicom_port = free_port()
            while self.dicom_port == self.http_port:
                self.dicom_port = free_port()
            self.storage_dir.mkdir()
            config_path = self.workdir / "orthanc.json"
            config_path.write_text(json.dumps(self.config(), indent=2))
            build_bind_shim(self.workdir)
            self._launch()
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self) -> None:
        assert self.workdir is not None
        env = dict(os.environ, TCP_NODELAY="1")
        shim = self.workdir / "bind_loopback.so"
        env["LD_PRELOAD"] = " ".join(filter(None, [str(shim), env.get("LD_PRELOAD", "")]))
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [ORTHANC_BINARY, str(self.workdir / "orthanc.json")],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=self.workdir,
            )
        self._wait_ready()

    def restart(self) -> None:
        """The same server on the same storage, in a fresh process: its peak RSS from now."""
        assert self.process is not None
        stop_process(self.process)
        try:
            self._launch()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"Orthanc exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/system", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"Orthanc did not answer within {self.startup_timeout}s:\n"
                           f"{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def statistics(self) -> dict[str, object]:
        with urllib.request.urlopen(f"{self.url}/statistics", timeout=10) as response:
            result: dict[str, object] = json.load(response)
            return result

    def peak_rss_kb(self) -> int:
        """Orthanc's peak resident memory so far (VmHWM), in KiB."""
        assert self.process is not None
        return peak_rss_kib(self.process.pid)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_process(self.process)
        self.process = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> OrthancServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
