"""The cluster itself: a service host (PostgreSQL, Redis), an S3 host (moto), two web
nodes, two DICOM listener nodes, two Celery workers, one beat, two HAProxies and a client,
each in its own network namespace (:mod:`deploy.cluster.network`).

Every node runs the project as ``bin/portal`` and the README's "Running at scale" run it
(gunicorn, ``manage.py dicom_listener``, ``celery -A portal worker``/``beat``) from this
checkout, with one environment: the same ``SECRET_KEY``, ``DATABASE_URL`` and
``REDIS_URL`` on the service host, the local tier on one shared directory (as hosts
mounting the same NFS export) and the replica on the S3 host. Each listener node has its
own spool folder on that shared file system, so a node that never comes back can have its
spool recovered from another host (README, "Running at scale").
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import network

if TYPE_CHECKING:
    import psycopg

BASE_DIR = Path(__file__).resolve().parents[2]
PYTHON = str(Path(sys.executable))
BIN = Path(sys.executable).parent
PG_BIN = Path("/usr/lib/postgresql/15/bin")

HOSTS = {  # name: last octet of its address in network.SUBNET
    "svc": 2, "s3": 3, "lb-web": 10, "lb-dicom": 11, "web-a": 21, "web-b": 22,
    "dicom-a": 31, "dicom-b": 32, "worker-a": 41, "worker-b": 42, "beat": 45, "client": 100,
    "web-c": 23, "web-d": 24,  # only in a cluster asked for more web nodes (the load test)
}
WEB_NODES = ("web-a", "web-b")
MORE_WEB_NODES = ("web-c", "web-d")
LISTENER_NODES = ("dicom-a", "dicom-b")
WORKER_NODES = ("worker-a", "worker-b")
WEB_PORT = 8000
DICOM_PORT = 11112
PG_PORT = 5432
REDIS_PORT = 6379
S3_PORT = 5000
BUCKET = "replica"
MODALITY = "MODALITY"  # the AE title clients send as; a configured peer at the DICOM LB
START_TIMEOUT = 60.0


def address(host: str) -> str:
    return f"{network.SUBNET}.{HOSTS[host]}"


def storescu_argv(paths: Sequence[object], *, timeout: int = 30,
                  dimse_timeout: int = 60) -> list[str]:
    """DCMTK's storescu sending ``paths`` in order over one association, as the modality,
    to the DICOM balancer (``-to``/``-ta`` TCP and ACSE timeouts, ``-td`` per DIMSE)."""
    return ["storescu", "-v", "-aet", MODALITY, "-aec", "PORTAL", "-to", str(timeout),
            "-ta", str(timeout), "-td", str(dimse_timeout), address("lb-dicom"),
            str(DICOM_PORT), *map(str, paths)]


@dataclass
class Node:
    """One long-running process (and its children) on one host; its process group is
    what a crash of the host kills."""

    name: str
    host: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Node:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                network.in_host(self.host, self.argv), env=self.env, cwd=BASE_DIR,
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL to every process of the node at once: the host died."""
        self._signal(signal.SIGKILL)

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None:
            return
        self._signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self._signal(signal.SIGKILL)  # children that outlived their parent
        self.process = None

    def _signal(self, signum: int) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass
        if signum == signal.SIGKILL:
            self.process.wait(timeout=10)


@dataclass
class Cluster:
    root: Path
    nodes: dict[str, Node] = field(default_factory=dict)
    secret_key: str = field(default_factory=lambda: base64.b64encode(os.urandom(48)).decode())
    web_nodes: tuple[str, ...] = WEB_NODES

    @property
    def hosts(self) -> dict[str, int]:
        """The hosts of this cluster: every one of HOSTS but web nodes it was not asked for."""
        return {name: octet for name, octet in HOSTS.items()
                if name in self.web_nodes or name not in (*WEB_NODES, *MORE_WEB_NODES)}

    # --- layout --------------------------------------------------------------------------
    @property
    def storage(self) -> Path:
        """The local tier every node mounts (the shared "NFS export")."""
        return self.root / "shared" / "dicom"

    def spool(self, node: str) -> Path:
        return self.root / "shared" / "spool" / node

    @property
    def pg_socket_dir(self) -> Path:
        return self.root / "pg-socket"

    @property
    def database_url(self) -> str:
        return f"postgres://postgres@{address('svc')}:{PG_PORT}/portal"

    @property
    def s3_url(self) -> str:
        return f"http://{address('s3')}:{S3_PORT}"

    @property
    def web_url(self) -> str:
        return f"http://{address('lb-web')}:{WEB_PORT}"

    def env(self, node: str) -> dict[str, str]:
        """The one environment of every node (as its systemd unit would set it)."""
        keep = {name: os.environ[name] for name in ("PATH", "LANG", "HOME")
                if name in os.environ}
        return {
            **keep,
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "SECRET_KEY": self.secret_key,
            "ALLOWED_HOSTS": f"{address('lb-web')},localhost",
            "DATABASE_URL": self.database_url,
            "REDIS_URL": f"redis://{address('svc')}:{REDIS_PORT}/0",
            "DATA_DIR": str(self.root / "data" / node),
            "DICOM_STORAGE_DIR": str(self.storage),
            "DICOM_SPOOL_DIR": str(self.spool(node)),
            # On the storage's file system (a received body becomes the blob by a link), one
            # folder per node: what a dead node was receiving is found by its name.
            "TMPDIR": str(self.root / "shared" / "tmp" / node),
            "DICOM_AE_TITLE": "PORTAL",
            "DICOM_NETWORK_TIMEOUT": "20",
            "REPLICA_URL": self.s3_url, "REPLICA_BUCKET": BUCKET, "REPLICA_REGION": "us-east-1",
            "REPLICA_ACCESS_KEY_ID": "testing", "REPLICA_SECRET_ACCESS_KEY": "testing",
            "REPLICA_PREFIX": "objects/", "REPLICA_CURRENT_KEY": "k1",
            "REPLICA_KEYS": f"k1:{base64.b64encode(b'c' * 32).decode()}",
            "REPLICA_RETRY_SECONDS": "1", "REPLICA_RETRY_MAX_SECONDS": "4",
            "REPLICA_DRAIN_INTERVAL_SECONDS": "10", "REPLICA_LEASE_SECONDS": "20",
            # A dead worker node's tasks go to the other one after this many seconds (an
            # hour by default; the harness's tasks are short and its retries shorter).
            "CELERY_VISIBILITY_TIMEOUT": "15",
            "PYTHONUNBUFFERED": "1",
        }

    # --- running things on hosts ---------------------------------------------------------
    def run(self, host: str, argv: Sequence[str], *, timeout: float = 120.0,
            check: bool = True, env: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess[str]:
        """A one-shot command on ``host`` (a client tool, a management command)."""
        result = subprocess.run(network.in_host(host, argv), env=env or self.env(host),
                                cwd=BASE_DIR, capture_output=True, text=True,
                                timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} on {host} failed ({result.returncode}):\n"
                               f"{result.stdout}\n{result.stderr}")
        return result

    def manage(self, host: str, *args: str, timeout: float = 120.0,
               check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(host, [PYTHON, "manage.py", *args], timeout=timeout, check=check)

    def wait_for_port(self, host: str, port: int, *, frm: str = "client",
                      timeout: float = START_TIMEOUT) -> float:
        """Wait until ``host:port`` accepts a connection from ``frm``; seconds waited."""
        started = time.monotonic()
        script = (f"end=$((SECONDS+{int(timeout)})); while [ $SECONDS -lt $end ]; do "
                  f"(exec 3<>/dev/tcp/{address(host)}/{port}) 2>/dev/null && exit 0; "
                  "sleep 0.05; done; exit 1")
        if self.run(frm, ["bash", "-c", script], timeout=timeout + 10,
                    check=False).returncode != 0:
            raise TimeoutError(f"{host}:{port} did not answer within {timeout}s")
        return time.monotonic() - started

    def add(self, name: str, host: str, argv: list[str],
            env: dict[str, str] | None = None) -> Node:
        node = Node(name, host, argv, env or self.env(host), self.root / "logs" / f"{name}.log")
        self.nodes[name] = node
        return node.start()

    # --- the roles -----------------------------------------------------------------------
    def start_postgres(self) -> Node:
        if "postgres" in self.nodes:
            node = self.nodes["postgres"].start()
            self.wait_for_port("svc", PG_PORT)
            return node
        postgres = ["setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups",
                    str(PG_BIN / "postgres"), "-D", str(self.root / "pgdata"),
                    "-c", f"listen_addresses={address('svc')}", "-c", f"port={PG_PORT}",
                    "-c", f"unix_socket_directories={self.pg_socket_dir}",
                    "-c", "fsync=off", "-c", "synchronous_commit=off",
                    "-c", "full_page_writes=off", "-c", "max_connections=200"]
        node = self.add("postgres", "svc", postgres, env={"PATH": os.environ["PATH"]})
        self.wait_for_port("svc", PG_PORT)
        return node

    def stop_postgres(self) -> None:
        """A fast shutdown (as ``pg_ctl stop -m fast``): sessions are ended, nothing
        listens until :meth:`start_postgres`."""
        node = self.nodes["postgres"]
        assert node.process is not None
        node.process.send_signal(signal.SIGINT)
        node.process.wait(timeout=30)
        node.process = None

    def up(self) -> None:
        for folder in ("shared/dicom", "shared/tmp", "logs", "pg-socket", "pgdata"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        (self.root / "shared" / "media").mkdir(parents=True, exist_ok=True)
        for node in self.hosts:
            (self.root / "data" / node).mkdir(parents=True, exist_ok=True)
            # The default storage (DATA_DIR/media: data exports) is shared as well: a
            # worker builds an export that a web node hands out.
            (self.root / "data" / node / "media").symlink_to(self.root / "shared" / "media")
            (self.root / "shared" / "tmp" / node).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)  # noqa: S103 - postgres must reach its data dir
        shutil.chown(self.root / "pgdata", "postgres", "postgres")
        shutil.chown(self.pg_socket_dir, "postgres", "postgres")
        subprocess.run(["setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups",
                        str(PG_BIN / "initdb"), "-D", str(self.root / "pgdata"), "-U",
                        "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
                       check=True, capture_output=True, timeout=120)
        with (self.root / "pgdata" / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {network.SUBNET}.0/24 trust\n")
        network.remove_all()
        network.create(self.hosts)
        self.start_postgres()
        self.run("svc", [str(PG_BIN / "createdb"), "-h", str(self.pg_socket_dir), "-U",
                         "postgres", "portal"])
        self.add("redis", "svc", ["redis-server", "--bind", address("svc"), "--port",
                                  str(REDIS_PORT), "--save", "", "--appendonly", "no",
                                  "--protected-mode", "no"])
        self.add("s3", "s3", [str(BIN / "moto_server"), "-H", address("s3"), "-p",
                              str(S3_PORT)])
        self.manage("worker-a", "migrate", "--no-input", "-v0", timeout=300)
        self.manage("worker-a", "dicom_peers", "add", MODALITY, address("lb-dicom"),
                    "--store", "--query", "--retrieve", "--description", "cluster client")
        self.wait_for_port("s3", S3_PORT)
        self.run("client", ["curl", "-sf", "-X", "PUT", f"{self.s3_url}/{BUCKET}"])
        for node in self.web_nodes:
            self.add(node, node, [str(BIN / "gunicorn"), "portal.wsgi", "--preload", "--bind",
                                  f"{address(node)}:{WEB_PORT}", "--workers", "1",
                                  "--threads", "4", "--graceful-timeout", "5"])
        for node in LISTENER_NODES:
            self.start_listener(node)
        for node in WORKER_NODES:
            self.add(node, node, [str(BIN / "celery"), "-A", "portal", "worker",
                                  "--concurrency", "1", "-n", f"{node}@cluster",
                                  "--without-gossip", "--without-mingle", "-l", "info"])
        self.add("beat", "beat", [str(BIN / "celery"), "-A", "portal", "beat", "-l", "info",
                                  "-s", str(self.root / "data" / "beat" / "schedule")])
        self.add("lb-web", "lb-web", ["haproxy", "-db", "-f", str(self.haproxy_config(
            "web", address("lb-web"), WEB_PORT, self.web_nodes, WEB_PORT))])
        self.add("lb-dicom", "lb-dicom", ["haproxy", "-db", "-f", str(self.haproxy_config(
            "dicom", address("lb-dicom"), DICOM_PORT, LISTENER_NODES, DICOM_PORT))])
        for node in (*self.web_nodes, "lb-web"):
            self.wait_for_port(node, WEB_PORT)
        for node in (*LISTENER_NODES, "lb-dicom"):
            self.wait_for_port(node, DICOM_PORT)
        # A balancer marks its servers up only after their checks pass ("rise 2"): until
        # then it has none to send a client to.
        self.wait_backends_up("web", self.web_nodes)
        self.wait_backends_up("dicom", LISTENER_NODES)

    def queue_depth(self) -> int:
        """Tasks waiting in the broker's queue (Celery's default, the one every node
        takes), not counting those a worker has taken."""
        out = self.run("svc", ["redis-cli", "-h", address("svc"), "-p", str(REDIS_PORT),
                               "llen", "celery"]).stdout
        return int(out.strip())

    def haproxy_socket(self, name: str) -> Path:
        return self.root / f"haproxy-{name}.sock"

    def backend_status(self, name: str) -> dict[str, str]:
        """Each server of balancer ``name`` and its state by HAProxy's checks ("UP", ...)."""
        import socket

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(5)
            conn.connect(str(self.haproxy_socket(name)))
            conn.sendall(b"show stat\n")
            raw = b""
            while chunk := conn.recv(65536):
                raw += chunk
        lines = raw.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
        return {row["svname"]: row["status"] for row in rows
                if row.get("svname") not in ("FRONTEND", "BACKEND")}

    def wait_backends_up(self, name: str, servers: Sequence[str],
                         timeout: float = START_TIMEOUT) -> float:
        """Wait until balancer ``name`` counts every one of ``servers`` up; seconds waited."""
        started = time.monotonic()
        while True:
            try:
                status = self.backend_status(name)
            except OSError:
                status = {}
            if all(status.get(server) == "UP" for server in servers):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{name} balancer: servers not up within {timeout}s: "
                                   f"{status}")
            time.sleep(0.1)

    def start_listener(self, node: str) -> Node:
        if node in self.nodes:
            return self.nodes[node].start()
        return self.add(node, node, [PYTHON, "manage.py", "dicom_listener", "--host",
                                     address(node), "--port", str(DICOM_PORT),
                                     "--processes", "1"])

    def haproxy_config(self, name: str, bind: str, port: int, backends: Sequence[str],
                       backend_port: int) -> Path:
        """TCP mode for both: HTTP and DICOM pass through untouched. A dead backend is
        taken out after two failed checks half a second apart, and a connection refused
        by one is retried on the other (``option redispatch``)."""
        servers = "\n".join(f"    server {b} {address(b)}:{backend_port} check inter 500 "
                            "fall 2 rise 2" for b in backends)
        path = self.root / f"haproxy-{name}.cfg"
        path.write_text(f"""global
    maxconn 500
    stats socket {self.haproxy_socket(name)} mode 600 level user
defaults
    mode tcp
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    retries 3
    option redispatch
frontend {name}
    bind {bind}:{port}
    default_backend {name}-nodes
backend {name}-nodes
    balance roundrobin
{servers}
""")
        return path

    def down(self) -> None:
        for node in reversed(list(self.nodes.values())):
            try:
                node.stop()
            except Exception as exc:  # tear down the rest whatever happens
                print(f"cannot stop {node.name}: {exc}", file=sys.stderr)
        network.remove_all()

    # --- looking at the cluster from outside ---------------------------------------------
    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        """A connection to the cluster's database over its Unix socket (no network needed)."""
        import psycopg

        return psycopg.connect(host=str(self.pg_socket_dir), port=PG_PORT, user="postgres",
                               dbname="portal", connect_timeout=5, autocommit=True)

    def sql(self, query: str, *params: object) -> list[tuple[object, ...]]:
        """A query on the cluster's database, on a connection of its own."""
        with self.connect() as conn:
            return list(conn.execute(query, params).fetchall())


def temporary_root() -> Path:
    return Path(tempfile.mkdtemp(prefix="portal-cluster-"))


CREATE_ADMIN = """
from accounts.models import ApiToken, Role, User
user = User.objects.create_user(username="cluster-admin", email="cluster@example.org",
                                password=None, role=Role.ADMIN, is_staff=True,
                                is_superuser=True)  # sees every clinic: the whole archive
print(ApiToken.issue(user, "cluster harness")[1])
"""


def api_token(cluster: Cluster) -> str:
    """A bearer token of a platform administrator (for STOW-RS, QIDO-RS and WADO-RS of
    every study, whichever clinic its patient is at)."""
    out = cluster.manage("worker-a", "shell", "-c", CREATE_ADMIN).stdout
    return out.strip().splitlines()[-1]
