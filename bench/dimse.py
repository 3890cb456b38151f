"""DIMSE speed of the portal's listener beside Orthanc, on the same CT files, in one run.

    .venv/bin/python bench/dimse.py [--slices 200] [--finds 20] [--parallel 2] [--postgres]
                                    [--rounds 3]

Writes one synthetic CT series (512x512, 16-bit, ~0.5 MB a slice) to a temporary folder and
measures, with DCMTK clients (``TCP_NODELAY=1``, one association unless said otherwise):

* the machine's limit: ``storescu`` into DCMTK's ``storescp`` writing files;
* Orthanc 1.10 (bench/orthanc.py, fresh, loopback only) and the portal's
  ``manage.py dicom_listener`` (fresh DATA_DIR; SQLite, and PostgreSQL with ``--postgres``):
  - C-STORE of the folder by ``storescu``, one association, and the folder split over
    ``--parallel`` associations at once: ``--rounds`` times each, the servers taking turns,
    the median printed with the range (this kind of machine varies by a third from one
    minute to the next);
  - C-ECHO with ``echoscu`` (an association set up, one echo, released) and C-FIND of the
    study by PatientID with ``findscu`` (median and p95 of ``--finds`` each a round, over
    every round, the client's own start-up included, as a site's scripts see it);
  - C-GET of the study with ``getscu`` (once, and by ``--parallel`` getscu at once: the
    rate of them all) and C-MOVE to a ``storescp`` with ``movescu``, once a round each:
    the median of the rounds with their range.
* with ``--replica REDIS_URL``, the portal on SQLite twice more, both with their cache and
  Celery broker at ``REDIS_URL``: without a replica, and with one (a moto S3 server started
  here, an encryption key): every object then also gets its copy row and its replication
  task, sent to the broker after commit (``replica.dispatcher``). No worker consumes them
  in this run, so the rate is what a modality waits for when the workers are elsewhere (the
  tasks are removed at the end). The 10% budget of issue 12 is the one against the other
  (printed as a ratio): only the replica differs between them. ``--store-only`` measures
  only the C-STORE rows (for more rounds in the same minutes).

Everything started here is stopped, and temporary folders and databases removed, at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

from orthanc import OrthancServer, free_port, run_sql, stop_process  # noqa: E402
from replica_settings import broker_env, replica_env  # noqa: E402

from imaging.synthetic import PatientSpec, SeriesSpec, write_study  # noqa: E402

PYTHON = sys.executable
PATIENT = PatientSpec("BENCH-DIMSE", "Bench^Dimse", datetime.date(1970, 1, 1), "O")
CLIENT = "BENCHSCU"
DEST = "BENCHDEST"
PORTAL_ENV_DROP = ("DATABASE_URL", "DICOM_STORAGE_DIR", "S3_BUCKET", "CELERY_BROKER_URL",
                   "REDIS_URL", "REPLICA_URL", "TASKS_IN_PROCESS")


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "TCP_NODELAY": "1", **extra}


def run(*args: str, cwd: Path | None = None, environ: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    result = subprocess.run(list(args), env=environ or env(), cwd=cwd, capture_output=True,
                            text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return elapsed


@contextlib.contextmanager
def storescp(folder: Path, ae_title: str, port: int) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(["storescp", "-aet", ae_title, "+xa", "-od", str(folder),
                                str(port)], env=env(), cwd=folder,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_echo(ae_title, port)
        yield
    finally:
        stop_process(process, timeout=10)


def wait_for_echo(called: str, port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = subprocess.run(["echoscu", "-aet", CLIENT, "-aec", called, "127.0.0.1",
                                 str(port)], env=env(), capture_output=True, check=False)
        if result.returncode == 0:
            return
        time.sleep(0.2)
    raise TimeoutError(f"no C-ECHO answer from {called} on port {port}")


def start_listener(environ: dict[str, str], port: int, log_path: Path,
                   aet: str = "PORTAL") -> subprocess.Popen[bytes]:
    """``manage.py dicom_listener`` on 127.0.0.1:``port``, once it answers a C-ECHO (as
    ``aet``, to the peer CLIENT). Its output is appended to ``log_path``."""
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [PYTHON, "manage.py", "dicom_listener", "--host", "127.0.0.1", "--port",
             str(port)], cwd=REPO, env=environ, stdout=log, stderr=log)
    try:
        wait_for_echo(aet, port)
    except BaseException:
        stop_process(process)
        raise
    return process


class Target:
    """Something with a DICOM port to store into, query and retrieve from."""

    name: str
    aet: str
    port: int

    def store(self, files: list[Path]) -> float:
        return run("storescu", "-aet", CLIENT, "-aec", self.aet, "127.0.0.1", str(self.port),
                   *map(str, files))


class Portal(Target):
    def __init__(self, scratch: Path, dest_port: int, postgres_url: str | None,
                 extra_env: dict[str, str] | None = None) -> None:
        self.name = self.named(postgres_url, extra_env)
        self.aet = "PORTAL"
        self.port = free_port()
        self.data_dir = Path(tempfile.mkdtemp(prefix="bench-dimse-portal-", dir=scratch))
        self.postgres_url = postgres_url.rstrip("/") if postgres_url else None
        self.database = f"bench_dimse_{os.getpid()}"
        base = {k: v for k, v in os.environ.items() if k not in PORTAL_ENV_DROP}
        self.environ = {**base, "DATA_DIR": str(self.data_dir), "TCP_NODELAY": "1",
                        "LOG_LEVEL": "WARNING"}
        if self.postgres_url:
            self.environ["DATABASE_URL"] = f"{self.postgres_url}/{self.database}"
        self.environ.update(extra_env or {})
        self.dest_port = dest_port
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def named(postgres_url: str | None, extra_env: dict[str, str] | None = None) -> str:
        """The column of a portal with these settings."""
        name = "portal (PostgreSQL)" if postgres_url else "portal (SQLite)"
        if extra_env and extra_env.get("REPLICA_URL"):
            return name + ", replica queued"
        if extra_env and extra_env.get("REDIS_URL"):
            return name + ", Redis"
        return name

    def _manage(self, *args: str) -> None:
        run(PYTHON, "manage.py", *args, cwd=REPO, environ=self.environ)

    def __enter__(self) -> Portal:
        if self.postgres_url:
            run_sql(self.postgres_url, f'DROP DATABASE IF EXISTS "{self.database}"')
            run_sql(self.postgres_url, f'CREATE DATABASE "{self.database}"')
        self._manage("migrate", "--no-input", "-v0")
        self._manage("dicom_peers", "add", CLIENT, "127.0.0.1", "--store", "--query",
                     "--retrieve")
        self._manage("dicom_peers", "add", DEST, "127.0.0.1", str(self.dest_port))
        self.process = start_listener(self.environ, self.port, self.data_dir / "listener.log",
                                      self.aet)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            stop_process(self.process)
        shutil.rmtree(self.data_dir, ignore_errors=True)
        if self.postgres_url:
            run_sql(self.postgres_url, f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')


class Orthanc(Target):
    def __init__(self, dest_port: int, dicomweb: bool = False) -> None:
        self.name = "Orthanc 1.10"
        # The benchmark's client is a known modality with every right, as it is a known
        # peer with every permission on the portal.
        self.server = OrthancServer(dicomweb=dicomweb, extra_config={
            "DicomModalities": {DEST: [DEST, "127.0.0.1", dest_port],
                                CLIENT: [CLIENT, "127.0.0.1", free_port()]},
            "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowMove": True,
        })

    def __enter__(self) -> Orthanc:
        self.server.start()
        self.aet, self.port = self.server.aet, self.server.dicom_port
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()


def median_p95(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"{statistics.median(ordered) * 1000:.1f} [{p95 * 1000:.1f}] ms"


def rates(files: list[Path], per_second: list[float]) -> str:
    """Median rate of the rounds, with their range: this kind of machine is noisy."""
    size_mb = sum(f.stat().st_size for f in files) / 1e6
    middle = statistics.median(per_second)
    spread = (f" ({min(per_second):.0f}-{max(per_second):.0f}, {len(per_second)} rounds)"
              if len(per_second) > 1 else "")
    return f"{middle:7.1f} inst/s {middle * size_mb / len(files):7.1f} MB/s{spread}"


RETRIEVES = ("C-GET study", "C-GET study, {parallel} associations at once", "C-MOVE study")


def measure(target: Target, files: list[Path], study_uid: str, scratch: Path,
            args: argparse.Namespace, dest_port: int) -> dict[str, list[float]]:
    """C-ECHO and C-FIND times (seconds, ``args.finds`` of each), and the seconds of a
    C-GET, of ``args.parallel`` C-GETs at once (per C-GET) and of a C-MOVE of the study
    already stored in ``target``."""
    row: dict[str, list[float]] = {}
    row["C-ECHO with association set-up"] = [
        run("echoscu", "-aet", CLIENT, "-aec", target.aet, "127.0.0.1", str(target.port))
        for _ in range(args.finds)]
    row["C-FIND study by PatientID"] = [
        run("findscu", "-aet", CLIENT, "-aec", target.aet, "-S",
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"PatientID={PATIENT.patient_id}",
            "-k", "StudyInstanceUID", "-k", "StudyDate", "127.0.0.1", str(target.port))
        for _ in range(args.finds)]

    def get(out: Path) -> float:
        out.mkdir()
        seconds = run("getscu", "-aet", CLIENT, "-aec", target.aet, "-S", "-od", str(out),
                      "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
                      "127.0.0.1", str(target.port), cwd=out)
        assert len(list(out.iterdir())) == len(files), "C-GET did not bring every object back"
        shutil.rmtree(out)
        return seconds

    def move(out: Path) -> float:
        with storescp(out, DEST, dest_port):
            seconds = run("movescu", "-aet", CLIENT, "-aec", target.aet, "-aem", DEST, "-S",
                          "-k", "QueryRetrieveLevel=STUDY", "-k",
                          f"StudyInstanceUID={study_uid}", "127.0.0.1", str(target.port),
                          cwd=out)
        assert len(list(out.iterdir())) == len(files), "C-MOVE did not deliver every object"
        shutil.rmtree(out)
        return seconds

    # A server's first C-GET and C-MOVE after its start are not timed, on every server
    # alike: they pay one-off set-up (the portal's imports and caches) that a listener
    # running for days does not.
    get(scratch / f"get-{target.aet}-{time.monotonic_ns()}-warm")
    move(scratch / f"move-{target.aet}-{time.monotonic_ns()}-warm")
    get_study, get_parallel, move_study = (name.format(parallel=args.parallel)
                                           for name in RETRIEVES)
    row[get_study] = [get(scratch / f"get-{target.aet}-{time.monotonic_ns()}")]
    # The same study to ``--parallel`` workstations at once: the MB/s of them all.
    outs = [scratch / f"get-{target.aet}-{time.monotonic_ns()}-{i}"
            for i in range(args.parallel)]
    started = time.perf_counter()
    with ThreadPoolExecutor(args.parallel) as pool:
        list(pool.map(get, outs))
    row[get_parallel] = [(time.perf_counter() - started) / args.parallel]

    row[move_study] = [move(scratch / f"move-{target.aet}-{time.monotonic_ns()}")]
    return row


def summarised(files: list[Path], measured: dict[str, list[float]]) -> dict[str, str]:
    """The rows of :func:`measure` over every round: times as median [p95] ms, retrieves as
    the median rate of the rounds (the range in inst/s)."""
    return {name: rates(files, [len(files) / seconds for seconds in samples])
            if name.startswith(("C-GET", "C-MOVE")) else median_p95(samples)
            for name, samples in measured.items()}


def parallel_store(target: Target, files: list[Path], parallel: int) -> float:
    """Objects per second, the files split over ``parallel`` associations at once."""
    shares = [files[i::parallel] for i in range(parallel)]
    started = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(target.store, shares))
    return len(files) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--finds", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--postgres-url", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--no-sqlite", action="store_true", help="only PostgreSQL")
    parser.add_argument("--store-only", action="store_true",
                        help="only the C-STORE rows (no echo, find or retrieve)")
    parser.add_argument("--replica", metavar="REDIS_URL", default="",
                        help="also the portal (SQLite) with a replica, its tasks queued to "
                             "this Redis (a db of its own: it is flushed at the end)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="C-STORE rounds per server, taken in turn; medians are printed")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-dimse-"))
    moto: Any = None
    try:
        study_dir = scratch / "study"
        study_dir.mkdir()
        study_uid, files = write_study(
            study_dir, PATIENT, [SeriesSpec("CT", args.slices)],
            study_date=datetime.date(2026, 1, 1), accession="BENCH", description="bench",
        )
        size_mb = sum(f.stat().st_size for f in files) / 1e6
        print(f"{len(files)} CT slices, {size_mb:.1f} MB, in {study_dir}\n", flush=True)

        results: dict[str, dict[str, str]] = {}
        replicas: list[str] = []
        dest_port = free_port()
        sink_port = free_port()
        with storescp(scratch / "sink", "SINK", sink_port):
            seconds = run("storescu", "-aet", CLIENT, "-aec", "SINK", "127.0.0.1",
                          str(sink_port), *map(str, files))
        results["storescu -> storescp"] = {
            "C-STORE, 1 association":
                f"{len(files) / seconds:7.1f} inst/s {size_mb / seconds:7.1f} MB/s"}

        factories: list[Callable[[], contextlib.AbstractContextManager[Target]]] = [
            lambda: Orthanc(dest_port)]
        if not args.no_sqlite:
            factories.append(lambda: Portal(scratch, dest_port, None))
        if args.postgres:
            factories.append(lambda: Portal(scratch, dest_port, args.postgres_url))
        if args.replica:
            from tests.s3_support import MotoServer

            moto = MotoServer().start()
            replicated = replica_env(moto.url, args.replica)
            # The replica's baseline: the same cache and broker, no replica.
            baseline = broker_env(args.replica)
            factories.append(lambda: Portal(scratch, dest_port, None, baseline))
            factories.append(lambda: Portal(scratch, dest_port, None, replicated))
            replicas = [Portal.named(None, baseline), Portal.named(None, replicated)]
        single: dict[str, list[float]] = {}
        parallel: dict[str, list[float]] = {}
        retrieved: dict[str, dict[str, list[float]]] = {}  # server -> row -> samples
        # Servers take turns, round after round, each time fresh (the objects are new to
        # it): a slow minute of the machine then falls on every server alike.
        for round_number in range(max(1, args.rounds)):
            for factory in factories:
                with factory() as target:
                    print(f"round {round_number + 1}: {target.name} ...", flush=True)
                    single.setdefault(target.name, []).append(
                        len(files) / target.store(files))
                    if not args.store_only:
                        for name, samples in measure(target, files, study_uid, scratch,
                                                     args, dest_port).items():
                            retrieved.setdefault(target.name, {}).setdefault(
                                name, []).extend(samples)
                with factory() as target:
                    parallel.setdefault(target.name, []).append(
                        parallel_store(target, files, args.parallel))
        for name, measured in retrieved.items():
            results.setdefault(name, {}).update(summarised(files, measured))
        for name in single:
            results.setdefault(name, {})
            results[name]["C-STORE, 1 association"] = rates(files, single[name])
            results[name][f"C-STORE, {args.parallel} associations"] = rates(
                files, parallel[name])

        columns = ["C-STORE, 1 association", f"C-STORE, {args.parallel} associations",
                   "C-ECHO with association set-up", "C-FIND study by PatientID", "C-GET study",
                   f"C-GET study, {args.parallel} associations at once", "C-MOVE study"]
        print()
        print("| what | " + " | ".join(results) + " |")
        print("|---|" + "---|" * len(results))
        for column in columns:
            print(f"| {column} | " + " | ".join(
                r.get(column, "").strip() for r in results.values()) + " |")
        if replicas:
            off, on = replicas
            for label, found in (("1 association", single), (f"{args.parallel} associations",
                                                              parallel)):
                ratio = statistics.median(found[on]) / statistics.median(found[off])
                print(f"C-STORE, {label}: replica on / off (same Redis) {ratio:.2f}x "
                      f"(medians of {len(found[on])} rounds)")
    finally:
        if moto is not None:
            moto.stop()
        if args.replica:
            subprocess.run(["redis-cli", "-u", args.replica, "flushdb"], check=False,
                           capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
