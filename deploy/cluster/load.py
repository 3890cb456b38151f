"""The load test's parts: seed a cluster, write Locust's plan, run Locust on the client host,
read its figures, and watch the nodes meanwhile (database connections, CPU, memory, files).

``bench/load.py`` runs it (a clinic's day in minutes, the same with twice the web nodes, a
soak); ``tests/test_cluster.py`` runs it briefly to prove every kind of request works.
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg

from imaging.synthetic import PatientSpec, SeriesSpec, write_study

from .hosts import BIN, Cluster, storescu_argv

LOCUSTFILE = Path(__file__).with_name("locustfile.py")

LINKS = """
from accounts.models import User
from audit.trail import Actor
from imaging.models import Study
from sharing.services import create_download_link
user = User.objects.get(username="cluster-admin")
for study in Study.objects.filter(patient__patient_id__startswith="LOAD-").order_by("pk"):
    print("link", create_download_link(user, [study], actor=Actor.for_user(user),
                                       max_uses=100)[1])
"""


@dataclass(frozen=True)
class Day:
    """A clinic's day in miniature: what is archived before, what arrives during, who comes."""

    archived: int = 10  # studies already in the archive (doctors open them, patients fetch)
    arriving: int = 20  # studies the modalities send during the run
    series: tuple[SeriesSpec, ...] = (SeriesSpec("CT", 40, size=256),
                                      SeriesSpec("CT", 20, size=256, description="contrast"))
    modalities: int = 2
    doctors: int = 8
    patients: int = 2
    waits: dict[str, tuple[float, float]] = field(default_factory=lambda: {
        "modality": (5.0, 10.0), "doctor": (2.0, 5.0), "patient": (5.0, 15.0)})

    @property
    def users(self) -> int:
        return self.modalities + self.doctors + self.patients


def _studies(folder: Path, first: int, count: int, day: Day) -> list[tuple[str, list[Path]]]:
    made = []
    for n in range(first, first + count):
        patient = PatientSpec(f"LOAD-{n:04d}", f"Carga^Paciente{n}",
                              datetime.date(1960 + n % 40, 1 + n % 12, 1 + n % 28), "O")
        _, paths = write_study(folder / f"study-{n}", patient, list(day.series),
                                 study_date=datetime.date(2026, 3, 1 + n % 28),
                                 accession=f"ACC-LOAD-{n}", description="load", seed=n)
        made.append((patient.patient_id, sorted(paths)))
    return made


def store(cluster: Cluster, paths: list[Path]) -> None:
    """Send ``paths`` over one association through the DICOM balancer, all answered."""
    result = cluster.run("client", storescu_argv(paths), timeout=600,
                         env={"PATH": "/usr/bin:/bin", "TCP_NODELAY": "1"})
    assert result.returncode == 0, result.stdout + result.stderr


def write_plan(cluster: Cluster, folder: Path, day: Day, token: str) -> Path:
    """Archive ``day.archived`` studies, write the arriving ones, and the plan Locust
    reads: addresses, the bearer token (of the harness's administrator, who also makes
    the download links: :func:`deploy.cluster.hosts.api_token`), the patients, the links."""
    archived = _studies(folder / "archived", 0, day.archived, day)
    for _, paths in archived:
        store(cluster, paths)
    arriving = _studies(folder / "arriving", day.archived, day.arriving, day)
    out = cluster.manage("worker-a", "shell", "-c", LINKS).stdout.splitlines()
    links = [line.split()[1] for line in out if line.startswith("link ")]  # not the logging
    assert len(links) == day.archived, out
    plan = {
        "token": token,
        "storescu": storescu_argv([]),  # the files to send go after it
        "patients": [{"patient_id": patient_id} for patient_id, _ in archived],
        "send": [[str(p) for p in paths] for _, paths in arriving],
        "send_bytes": [sum(p.stat().st_size for p in paths) for _, paths in arriving],
        "links": links,
        "weights": {"modality": day.modalities, "doctor": day.doctors,
                    "patient": day.patients},
        "waits": day.waits,
    }
    path = folder / "plan.json"
    path.write_text(json.dumps(plan))
    return path


@dataclass
class Figures:
    """Locust's figures per request type ("Aggregated" among them), and the exit code."""

    rows: dict[str, dict[str, float]]
    exit_code: int
    output: str

    @property
    def failures(self) -> int:
        return int(self.rows.get("Aggregated", {}).get("failures", 0))


def run_locust(cluster: Cluster, plan: Path, day: Day, seconds: int, prefix: Path,
               ) -> Figures:
    """Locust, headless, on the client host, talking to the web balancer; every user
    started within the first seconds, stopped after ``seconds``."""
    argv = [str(BIN / "locust"), "-f", str(LOCUSTFILE), "--headless", "--only-summary",
            "-u", str(day.users), "-r", str(max(day.users // 2, 1)),
            "--run-time", f"{seconds}s", "--stop-timeout", "60",
            "--host", cluster.web_url, "--csv", str(prefix), "--loglevel", "WARNING"]
    env = {"PATH": os.environ["PATH"], "LOAD_PLAN": str(plan), "HOME": str(prefix.parent)}
    result = cluster.run("client", argv, env=env, check=False, timeout=seconds + 300)
    return Figures(read_stats(Path(f"{prefix}_stats.csv")), result.returncode,
                   result.stdout + result.stderr)


def read_stats(path: Path) -> dict[str, dict[str, float]]:
    rows = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            rows[row["Name"]] = {
                "requests": float(row["Request Count"]), "failures": float(row["Failure Count"]),
                "per_second": float(row["Requests/s"]), "p50": float(row["50%"] or 0),
                "p95": float(row["95%"] or 0), "p99": float(row["99%"] or 0),
                "bytes": float(row["Average Content Size"]) * float(row["Request Count"]),
            }
    return rows


# --- watching the nodes ------------------------------------------------------------------
def _group(cluster: Cluster, name: str) -> int | None:
    """The process group of node ``name`` (its first process's pid), None once it ended."""
    node = cluster.nodes[name]
    if node.process is None or node.process.poll() is not None:
        return None
    return node.process.pid


def processes(cluster: Cluster, name: str) -> list[psutil.Process]:
    """Every live process of node ``name`` (its process group: a master and its workers)."""
    group = _group(cluster, name)
    if group is None:
        return []
    found = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == group:
                found.append(process)
        except (ProcessLookupError, psutil.Error):
            continue
    return found


def cpu_seconds(cluster: Cluster, name: str) -> float:
    """CPU time a node has used, its ended children included (PostgreSQL's backends)."""
    total = 0.0
    leader = _group(cluster, name)  # the group's leader reaps the children
    for process in processes(cluster, name):
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
        if process.pid == leader:
            total += times.children_user + times.children_system
    return total


def usage(cluster: Cluster, name: str) -> dict[str, int]:
    """Resident memory (sum over the node's processes), open files and open sockets."""
    rss = files = sockets = 0
    for process in processes(cluster, name):
        try:
            rss += process.memory_info().rss
            for fd in os.scandir(f"/proc/{process.pid}/fd"):
                target = os.readlink(fd.path)
                if target.startswith("socket:"):
                    sockets += 1
                elif target.startswith("/"):
                    files += 1
        except (OSError, psutil.Error):
            continue
    return {"rss": rss, "files": files, "sockets": sockets}


CONNECTIONS = ("SELECT count(*) FROM pg_stat_activity "
               "WHERE datname = 'portal' AND pid <> pg_backend_pid()")


def database_connections(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    """Sessions on the portal's database, the watcher's own not counted."""
    row = conn.execute(CONNECTIONS).fetchone()
    assert row is not None
    return int(str(row[0]))


@dataclass
class Watch:
    """Samples taken every ``every`` seconds while a load runs."""

    samples: list[dict[str, Any]] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # node: CPU seconds over the run
    seconds: float = 0.0


@contextmanager
def watching(cluster: Cluster, every: float = 1.0,
             nodes: tuple[str, ...] = ()) -> Iterator[Watch]:
    """Sample database connections (and, for ``nodes``, memory and files) until the block
    ends; CPU seconds of every node over the block."""
    watch = Watch()
    stop = threading.Event()
    names = list(cluster.nodes)
    before = {name: cpu_seconds(cluster, name) for name in names}
    machine_before = psutil.cpu_times()
    started = time.monotonic()

    def sample() -> None:
        conn: psycopg.Connection[tuple[object, ...]] | None = None
        while not stop.wait(every):
            row: dict[str, Any] = {"t": round(time.monotonic() - started, 1)}
            try:  # one connection for the whole watch, opened again if the database restarted
                conn = conn if conn is not None and not conn.closed else cluster.connect()
                row["db_connections"] = database_connections(conn)
            except psycopg.Error:  # the database restarting is not the watcher's failure
                row["db_connections"] = None
                if conn is not None:
                    conn.close()
                conn = None
            for name in nodes:
                row[name] = usage(cluster, name)
            watch.samples.append(row)
        if conn is not None:
            conn.close()

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield watch
    finally:
        stop.set()
        thread.join(timeout=30)
        watch.seconds = time.monotonic() - started
        watch.cpu = {name: cpu_seconds(cluster, name) - before[name] for name in names}
        machine = psutil.cpu_times()
        busy = sum(machine) - machine.idle - sum(machine_before) + machine_before.idle
        watch.cpu["(machine)"] = busy
