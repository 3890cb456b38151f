"""Ingest speed of the portal beside Orthanc, on the same synthetic CT files, in one run.

    .venv/bin/python bench/ingest.py [--slices 400] [--small-slices 100] [--repeat 1]
                                     [--postgres] [--profile]

Generates one CT series (512x512, 16-bit, ~0.5 MB a slice) in a temporary folder, then
times on those same files:

* the machine's own limit: ``cp -r`` of the folder, and DCMTK ``storescu`` into ``storescp``;
* Orthanc: REST ``POST /instances`` (keep-alive, sequential as ImportDicomFiles.py, and two
  parallel clients) and C-STORE from ``storescu`` (one association), each into a fresh
  Orthanc (bench/orthanc.py);
* the portal: ``manage.py import_dicom FOLDER --no-progress`` in a fresh ``DATA_DIR`` timed
  end to end, and in-process without Python/Django start-up (bench/import_driver.py), with
  ``--workers 1`` and the default; on PostgreSQL too with ``--postgres``;
* the peak RSS of ``import_dicom`` at two study sizes, to show memory does not grow with
  the study.

Everything (Orthanc, temporary folders, benchmark databases) is removed at the end, also on
error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import json
import os
import pstats
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

from orthanc import OrthancServer, build_bind_shim, free_port, run_sql, stop_process  # noqa: E402

from imaging.synthetic import PatientSpec, SeriesSpec, write_study  # noqa: E402

PYTHON = sys.executable
DEFAULT_WORKERS = os.cpu_count() or 1
# Variables that would send the portal somewhere other than local disk and SQLite.
PORTAL_ENV_DROP = (
    "DATABASE_URL", "DICOM_STORAGE_DIR", "S3_BUCKET", "CELERY_BROKER_URL", "REDIS_URL",
)


@dataclass
class Study:
    folder: Path
    files: list[Path]
    nbytes: int


@dataclass
class Row:
    group: str
    label: str
    count: int
    nbytes: int
    seconds: float
    rss_kb: int | None = None
    orthanc: bool = False

    @property
    def per_second(self) -> float:
        return self.count / self.seconds

    @property
    def mb_per_second(self) -> float:
        return self.nbytes / 1e6 / self.seconds


@dataclass
class Measured:
    seconds: float
    rss_kb: int
    stdout: str
    setup_s: float = 0.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_measured(cmd: list[str], *, env: dict[str, str] | None = None) -> Measured:
    """Run ``cmd`` to completion: wall time, and peak RSS from GNU ``time``.

    The RSS is that of the largest single process in the command's tree (Linux reports the
    maximum over the process and its waited-for children, not their sum). It is taken by
    ``/usr/bin/time`` rather than our own ``wait4`` because a child forked from this
    (large) Python process starts with its peak RSS as a floor, even across ``exec``.
    """
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r") as rss,
    ):
        timed = ["/usr/bin/time", "-f", "%M", "-o", rss.name, *cmd]
        began = time.perf_counter()
        process = subprocess.Popen(timed, stdout=out, stderr=err, env=env, cwd=REPO)
        try:
            returncode = process.wait()
        except BaseException:
            process.kill()
            process.wait()
            raise
        seconds = time.perf_counter() - began
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        if returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} exited with {returncode}:\n"
                f"{stdout[-2000:]}\n{err.read().decode(errors='replace')[-4000:]}"
            )
        rss_kb = int(rss.read().split()[-1])
        return Measured(seconds, rss_kb, stdout)


# --- data -----------------------------------------------------------------------------------


def make_study(folder: Path, slices: int, seed: int) -> Study:
    _, files = write_study(
        folder,
        PatientSpec("BENCH-INGEST", "Bench^Ingest", datetime.date(1970, 1, 1), "O"),
        [SeriesSpec("CT", slices, description="Ingest benchmark")],
        study_date=datetime.date.today(),
        accession=f"BENCH{slices:06d}",
        description="Ingest benchmark",
        seed=seed,
    )
    return Study(folder, sorted(files), sum(f.stat().st_size for f in files))


# --- the machine's own limit ----------------------------------------------------------------


def file_copy(study: Study, scratch: Path) -> Measured:
    target = scratch / "copy"
    try:
        return run_measured(["cp", "-r", str(study.folder), str(target)])
    finally:
        shutil.rmtree(target, ignore_errors=True)


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"listener exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def storescu(aet: str, port: int, study: Study) -> Measured:
    env = dict(os.environ, TCP_NODELAY="1")
    cmd = [
        "storescu", "-aet", "BENCH", "-aec", aet, "+sd", "+r", "+sp", "*.dcm",
        "127.0.0.1", str(port), str(study.folder),
    ]
    return run_measured(cmd, env=env)


def storescu_to_storescp(study: Study, scratch: Path) -> Measured:
    """C-STORE into DCMTK's own receiver writing files: the network and disk floor."""
    workdir = scratch / "storescp"
    received = workdir / "in"
    received.mkdir(parents=True)
    try:
        shim = build_bind_shim(workdir)
        port = free_port()
        env = dict(os.environ, TCP_NODELAY="1", LD_PRELOAD=str(shim))
        listener = subprocess.Popen(
            ["storescp", "-aet", "SINK", "-od", str(received), str(port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            wait_listening(port, listener)
            measured = storescu("SINK", port, study)
        finally:
            stop_process(listener, timeout=10)
        stored = len(list(received.iterdir()))
        if stored != len(study.files):
            raise RuntimeError(f"storescp received {stored} of {len(study.files)} files")
        return measured
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --- Orthanc --------------------------------------------------------------------------------


def check_orthanc_count(orthanc: OrthancServer, study: Study) -> None:
    count = orthanc.statistics()["CountInstances"]
    if count != len(study.files):
        raise RuntimeError(f"Orthanc holds {count} instances, expected {len(study.files)}")


def orthanc_rest(study: Study, clients: int) -> Measured:
    """POST each file to /instances over keep-alive sessions, ``clients`` at a time."""
    with OrthancServer() as orthanc:
        url = f"{orthanc.url}/instances"

        def send(files: list[Path]) -> None:
            with requests.Session() as session:
                for path in files:
                    response = session.post(
                        url, data=path.read_bytes(),
                        headers={"Content-Type": "application/dicom"},
                    )
                    response.raise_for_status()

        shares = [study.files[i::clients] for i in range(clients)]
        began = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(send, shares))
        seconds = time.perf_counter() - began
        check_orthanc_count(orthanc, study)
        return Measured(seconds, orthanc.peak_rss_kb(), "")


def orthanc_cstore(study: Study) -> Measured:
    with OrthancServer() as orthanc:
        measured = storescu(orthanc.aet, orthanc.dicom_port, study)
        check_orthanc_count(orthanc, study)
        measured.rss_kb = orthanc.peak_rss_kb()  # the server's, not storescu's
        return measured


# --- the portal -----------------------------------------------------------------------------


class PortalDatabase:
    """Hands out fresh, migrated portal states (a DATA_DIR, and a database on PostgreSQL).

    Migrations run once into a template; each run gets a copy of it, so no run pays for
    ``migrate`` and none sees another's rows.
    """

    def __init__(self, scratch: Path, postgres_url: str | None) -> None:
        self.scratch = scratch
        self.postgres_url = postgres_url.rstrip("/") if postgres_url else None
        self.template_dir = scratch / "portal-template"
        self.template_db = f"bench_ingest_{os.getpid()}_template"
        self.runs = 0
        self.created: list[str] = []

    @property
    def engine(self) -> str:
        return "PostgreSQL" if self.postgres_url else "SQLite"

    def env(self, data_dir: Path, database: str | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in PORTAL_ENV_DROP}
        env.update(DATA_DIR=str(data_dir), DJANGO_SETTINGS_MODULE="portal.settings")
        if database is not None and self.postgres_url:
            env["DATABASE_URL"] = f"{self.postgres_url}/{database}"
        return env

    def _sql(self, statement: str) -> None:
        assert self.postgres_url
        run_sql(self.postgres_url, statement)

    def prepare(self) -> None:
        self.template_dir.mkdir()
        if self.postgres_url:
            self._sql(f'CREATE DATABASE "{self.template_db}"')
            self.created.append(self.template_db)
        env = self.env(self.template_dir, self.template_db)
        run_measured([PYTHON, "manage.py", "migrate", "--no-input", "-v", "0"], env=env)

    @contextlib.contextmanager
    def fresh(self) -> Iterator[dict[str, str]]:
        self.runs += 1
        data_dir = self.scratch / f"portal-run-{self.runs}"
        shutil.copytree(self.template_dir, data_dir)
        database = None
        if self.postgres_url:
            database = f"bench_ingest_{os.getpid()}_{self.runs}"
            self._sql(f'CREATE DATABASE "{database}" TEMPLATE "{self.template_db}"')
            self.created.append(database)
        try:
            yield self.env(data_dir, database)
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
            if database is not None:
                self._drop(database)

    def _drop(self, database: str) -> None:
        with contextlib.suppress(Exception):
            self._sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        if database in self.created:
            self.created.remove(database)

    def close(self) -> None:
        for database in list(self.created):
            self._drop(database)


def check_imported(output: str, study: Study) -> None:
    expected = f"{len(study.files)} files: {len(study.files)} stored"
    if expected not in output:
        raise RuntimeError(f"import did not store every file: {output.strip()!r}")


def portal_command(db: PortalDatabase, study: Study, workers: int) -> Measured:
    """``manage.py import_dicom`` end to end, as an operator runs it."""
    with db.fresh() as env:
        measured = run_measured(
            [PYTHON, "manage.py", "import_dicom", str(study.folder), "--no-progress",
             "--workers", str(workers)],
            env=env,
        )
    check_imported(measured.stdout, study)
    return measured


def portal_in_process(
    db: PortalDatabase, study: Study, workers: int, profile: Path | None = None
) -> Measured:
    """The command's own time, after Python and Django have started (import_driver.py)."""
    cmd = [PYTHON, str(BENCH / "import_driver.py"), str(study.folder), "--workers", str(workers)]
    if profile is not None:
        cmd += ["--profile", str(profile)]
    with db.fresh() as env:
        measured = run_measured(cmd, env=env)
    result = json.loads(measured.stdout.strip().splitlines()[-1])
    check_imported(result["output"], study)
    return Measured(result["import_s"], measured.rss_kb, result["output"], result["setup_s"])


# --- report ---------------------------------------------------------------------------------


def print_table(rows: list[Row], study: Study) -> None:
    orthanc_rows = [r for r in rows if r.orthanc]
    reference = next((r for r in orthanc_rows if "sequential" in r.label), None)
    best = max(orthanc_rows, key=lambda r: r.per_second, default=None)
    mb = study.nbytes / 1e6
    print()
    print(f"Ingest of one synthetic CT series: {len(study.files)} instances, {mb:.1f} MB "
          f"({mb / len(study.files):.2f} MB each), {DEFAULT_WORKERS} CPUs")
    print("MB = 10^6 bytes of DICOM files")
    ref_name = "Orthanc REST seq." if reference else "-"
    header = (f"{'what':<58} {'inst/s':>8} {'MB/s':>8} {'seconds':>8} {'peak RSS':>9} "
              f"{'/' + ref_name:>19} {'/best Orthanc':>13}")
    print()
    print(header)
    print("-" * len(header))
    group = ""
    for row in rows:
        if row.group != group:
            group = row.group
            print(f"{group}")
        rss = f"{row.rss_kb / 1024:.0f} MB" if row.rss_kb else ""
        vs_ref = f"{row.per_second / reference.per_second:.2f}x" if reference else ""
        vs_best = f"{row.per_second / best.per_second:.2f}x" if best else ""
        print(f"  {row.label:<56} {row.per_second:>8.1f} {row.mb_per_second:>8.1f} "
              f"{row.seconds:>8.2f} {rss:>9} {vs_ref:>19} {vs_best:>13}")


def print_memory(memory: list[tuple[str, int, int]], small: Study, large: Study) -> None:
    print()
    print("Peak RSS of manage.py import_dicom (largest single process) by study size")
    header = (f"{'':<34} {len(small.files):>6} slices {len(large.files):>6} slices "
              f"{'growth':>8}")
    print(header)
    print("-" * len(header))
    for label, small_kb, large_kb in memory:
        print(f"  {label:<32} {small_kb / 1024:>10.0f} MB {large_kb / 1024:>10.0f} MB "
              f"{(large_kb - small_kb) / 1024:>+7.0f} MB")


def print_profile(path: Path, limit: int = 25) -> None:
    print()
    print(f"cProfile of import_dicom --workers 1 (in-process), top {limit} by own time")
    stats = pstats.Stats(str(path), stream=sys.stdout)
    stats.strip_dirs().sort_stats("tottime").print_stats(limit)
    print(f"top {limit} by cumulative time")
    stats.sort_stats("cumulative").print_stats(limit)


# --- main -----------------------------------------------------------------------------------


@dataclass
class Case:
    group: str
    label: str
    measure: Callable[[], Measured]
    orthanc: bool = False
    rss: bool = True
    in_table: bool = True
    runs: list[Measured] = field(default_factory=list)

    def median(self) -> Measured:
        runs = sorted(self.runs, key=lambda m: m.seconds)
        return runs[len(runs) // 2]


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=400, help="slices in the main study")
    parser.add_argument(
        "--small-slices", type=int, default=0,
        help="slices in the second study for the memory check (default: a quarter)",
    )
    parser.add_argument(
        "--repeat", type=int, default=1,
        help="rounds; each round runs every case once, in turn, and the table shows medians",
    )
    parser.add_argument("--postgres", action="store_true", help="also run the portal on PG")
    parser.add_argument(
        "--postgres-url", default="postgres://postgres@127.0.0.1:5432",
        help="server for --postgres; benchmark databases are created and dropped there",
    )
    parser.add_argument("--profile", action="store_true",
                        help="also profile import_dicom --workers 1 and print the top")
    args = parser.parse_args()
    small_slices = args.small_slices or max(args.slices // 4, 10)
    repeat = max(args.repeat, 1)

    with (
        tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        scratch = Path(tmp)
        log(f"writing {args.slices} + {small_slices} synthetic CT slices under {scratch}")
        large = make_study(scratch / "study-large", args.slices, seed=1)
        small = make_study(scratch / "study-small", small_slices, seed=2)

        machine = "The machine's own limit"
        group = "Orthanc 1.10 (fresh server per run, SQLite index)"
        cases = [
            Case(machine, "cp -r of the folder (page cache, no fsync)",
                 lambda: file_copy(large, scratch), rss=False),
            Case(machine, "storescu -> storescp writing files (1 association)",
                 lambda: storescu_to_storescp(large, scratch), rss=False),
            Case(group, "REST POST /instances, 1 client, keep-alive (sequential)",
                 lambda: orthanc_rest(large, 1), orthanc=True),
            Case(group, "REST POST /instances, 2 parallel clients",
                 lambda: orthanc_rest(large, 2), orthanc=True),
            Case(group, "C-STORE from storescu, 1 association",
                 lambda: orthanc_cstore(large), orthanc=True),
        ]
        memory: list[tuple[str, Case, Case]] = []
        startups: list[tuple[str, Case]] = []
        databases: list[PortalDatabase] = []
        for url in [None] + ([args.postgres_url] if args.postgres else []):
            db = PortalDatabase(scratch / ("pg" if url else "sqlite"), url)
            db.scratch.mkdir()
            stack.callback(db.close)
            db.prepare()
            databases.append(db)
            group = f"Portal on {db.engine} (fresh DATA_DIR{' and database' if url else ''})"
            for workers in sorted({1, DEFAULT_WORKERS}):
                which = " (default)" if workers == DEFAULT_WORKERS else ""
                tag = f"--workers {workers}{which}"
                end_to_end = Case(group, f"manage.py import_dicom {tag}, end to end",
                                  functools.partial(portal_command, db, large, workers))
                in_process = Case(group, f"  same, in-process (no start-up) {tag}",
                                  functools.partial(portal_in_process, db, large, workers))
                cases += [end_to_end, in_process]
                startups.append((f"{db.engine} {tag}", in_process))
                if url is None:
                    smaller = Case(group, f"{small_slices} slices {tag}",
                                   functools.partial(portal_command, db, small, workers),
                                   in_table=False)
                    cases.append(smaller)
                    memory.append((f"{db.engine} {tag}", smaller, end_to_end))

        log(f"{len(cases)} cases x {repeat} rounds; {load()}")
        load_before = load()
        for round_number in range(1, repeat + 1):
            for case in cases:
                measured = case.measure()
                case.runs.append(measured)
                log(f"round {round_number}: {case.label.strip()}: {measured.seconds:.2f}s")
        load_after = load()

        profile_path = scratch / "import.prof"
        if args.profile:
            log("profiling import_dicom --workers 1 on SQLite")
            portal_in_process(databases[0], large, 1, profile=profile_path)

        rows = [
            Row(c.group, c.label, len(large.files), large.nbytes, c.median().seconds,
                c.median().rss_kb if c.rss else None, c.orthanc)
            for c in cases if c.in_table
        ]
        print_table(rows, large)
        print(f"Medians of {repeat} round(s); {load_before} before, {load_after} after "
              "(other work on the machine skews every figure).")
        print("Peak RSS: Orthanc rows show the Orthanc server's (VmHWM), portal rows the "
              "import process's.")
        print("Start-up before import_dicom runs (interpreter, django.setup(), imports, DB "
              "connection): "
              + ", ".join(f"{name} {c.median().setup_s:.2f} s" for name, c in startups))
        print_memory(
            [(name, s.median().rss_kb, b.median().rss_kb) for name, s, b in memory],
            small, large,
        )
        if args.profile and profile_path.exists():
            print_profile(profile_path)


if __name__ == "__main__":
    main()
