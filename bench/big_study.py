"""Memory and speed of retrieving one big study: C-GET, C-MOVE and WADO-RS, beside Orthanc.

    .venv/bin/python bench/big_study.py [--gb 5] [--large-mib 256] [--sqlite] [--no-orthanc]

Writes one CT study of about ``--gb`` GB (decimal) to a temporary folder, one file at a
time: half of it 512x512 16-bit slices (~0.5 MB each, imaging.synthetic), half multi-frame
objects of ``--large-mib`` MiB (512x512 frames, bench/large_objects.py). It is imported
into a fresh portal (``manage.py import_dicom``; PostgreSQL unless ``--sqlite``) and stored
into a fresh Orthanc 1.10 (``storescu``). Then, each retrieval on its own:

* C-GET of the study by DCMTK's ``getscu`` into a scratch folder (deleted after the case):
  objects counted; the dataset bytes (after the File Meta) of a sample compared by SHA-256
  with the originals';
* C-MOVE of the study to a DCMTK ``storescp`` (the same checks);
* WADO-RS study retrieve, ``multipart/related; type="application/dicom"``, read by
  ``requests`` in 1 MiB chunks into a SHA-256 and a streaming part counter (nothing kept):
  parts counted and their bytes summed.

The portal's serving processes are started fresh for each case, as they run in production:
``manage.py dicom_listener`` (its parent and the workers it forks) for the DIMSE cases,
gunicorn as ``bin/portal`` starts it (``--preload --workers 2 --threads 4``) for WADO-RS.
Orthanc is restarted on its storage before each of its cases. Peak RSS is each process's
VmHWM right after the case, and when idle, before it. Everything started is stopped, and
every folder and database removed, at the end or on error.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

import by_path  # noqa: E402
import request_floor  # noqa: E402
from large_objects import write_multiframe  # noqa: E402
from orthanc import free_port, stop_process  # noqa: E402
from peak_rss import children, peak_rss_kib, tree  # noqa: E402

from imaging.dicomfile import dataset_offset  # noqa: E402
from imaging.synthetic import PatientSpec, SeriesSpec, series_datasets  # noqa: E402

bench_dimse = by_path.load("dimse")
CLIENT, DEST, env, run = bench_dimse.CLIENT, bench_dimse.DEST, bench_dimse.env, bench_dimse.run
PATIENT = PatientSpec("BENCH-BIG", "Big^Study", datetime.date(1960, 5, 5), "M")
DICOM_PARTS = 'multipart/related; type="application/dicom"'
SLICE_BYTES = 512 * 512 * 2
SAMPLE = 24  # files whose dataset bytes are compared after a C-GET or C-MOVE


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- The study -----------------------------------------------------------------------------


def write_big_study(folder: Path, gb: float, large_mib: int) -> tuple[str, list[Path]]:
    """Half the bytes as slices, half as multi-frame objects; one object in memory at a time."""
    from pydicom.uid import generate_uid

    from imaging.synthetic import ROOT

    folder.mkdir(parents=True)
    study_uid = generate_uid(ROOT)
    target = gb * 1e9
    large_bytes = large_mib << 20
    large_count = max(1, round(target / 2 / large_bytes))
    slice_count = max(1, round((target - large_count * large_bytes) / (SLICE_BYTES + 1500)))
    common = dict(study_uid=study_uid, study_date=datetime.date(2026, 3, 1),
                  accession="BENCH-BIG", study_description="big study")
    paths: list[Path] = []
    started = time.monotonic()
    for ds in series_datasets(PATIENT, SeriesSpec("CT", slice_count), series_number=1,
                              **common):  # type: ignore[arg-type]
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
        if len(paths) % 1000 == 0:
            log(f"  {len(paths)}/{slice_count} slices written")
    frames = large_bytes // SLICE_BYTES
    for ds in series_datasets(PATIENT, SeriesSpec("CT", large_count, description="multi-frame"),
                              series_number=2, **common):  # type: ignore[arg-type]
        paths.append(write_multiframe(ds, folder / f"{ds.SOPInstanceUID}.dcm", frames))
    log(f"study written: {slice_count} slices and {large_count} x {large_mib} MiB multi-frame, "
        f"{total_bytes(paths) / 1e9:.2f} GB in {time.monotonic() - started:.0f} s")
    return study_uid, paths


def total_bytes(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths)


def dataset_sha256(path: Path) -> str:
    """SHA-256 of the dataset's bytes, after the File Meta (which says who wrote the file)."""
    digest = hashlib.sha256()
    with path.open("rb") as fp:
        fp.seek(dataset_offset(fp))
        while chunk := fp.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_received(folder: Path, originals: dict[str, Path]) -> str:
    """Count what arrived and compare a sample's dataset bytes; the folder is then removed."""
    received = {p.name.split(".", 1)[1] if p.name[:1].isalpha() else p.name: p
                for p in folder.iterdir() if p.is_file()}
    assert len(received) == len(originals), \
        f"{len(received)} objects received of {len(originals)}"
    uids = sorted(originals)
    sample = uids[:: max(1, len(uids) // SAMPLE)]
    # The multi-frame objects too: they sort anywhere among the UIDs.
    sample += [u for u in uids if originals[u].stat().st_size > 10 * SLICE_BYTES][:2]
    for uid in sample:
        assert dataset_sha256(received[uid]) == dataset_sha256(originals[uid]), \
            f"{uid}: dataset bytes differ"
    return f"{len(received)} objects, {len(set(sample))} compared by SHA-256: identical"


# --- Processes and their peaks -------------------------------------------------------------


def peaks(pids: list[int]) -> list[int]:
    return [peak_rss_kib(pid) for pid in pids]


def mib(kib: list[int]) -> str:
    return "/".join(f"{k / 1024:.0f}" for k in kib)


@dataclass
class Row:
    size: str
    path: str
    server: str
    seconds: float
    body_bytes: int
    rss_idle: str
    rss_after: str
    check: str

    @property
    def mb_s(self) -> float:
        return self.body_bytes / self.seconds / 1e6


@contextlib.contextmanager
def listener(portal: object, port: int) -> Iterator[list[int]]:
    """A fresh ``manage.py dicom_listener``: yields its pids (parent first, then workers)."""
    environ = {**portal.env(), "TCP_NODELAY": "1"}  # type: ignore[attr-defined]
    process = bench_dimse.start_listener(environ, port,
                                         portal.data_dir / "listener.log")  # type: ignore[attr-defined]
    try:
        time.sleep(1)  # the workers forked and idle
        yield tree(process.pid)
    finally:
        stop_process(process)


@contextlib.contextmanager
def gunicorn(portal: object) -> Iterator[tuple[str, list[int]]]:
    """gunicorn as bin/portal starts it (request_floor.gunicorn): the root URL, the pids."""
    before = set(children(os.getpid()))
    with request_floor.gunicorn(portal) as root:
        (master,) = [p for p in children(os.getpid()) if p not in before]
        yield root, tree(master)


@contextlib.contextmanager
def storescp(folder: Path, port: int) -> Iterator[None]:
    with bench_dimse.storescp(folder, DEST, port):
        yield


# --- The retrievals ------------------------------------------------------------------------


def c_get(aet: str, port: int, study_uid: str, out: Path) -> float:
    out.mkdir()
    return float(run("getscu", "-aet", CLIENT, "-aec", aet, "-S", "-od", str(out),
                     "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
                     "127.0.0.1", str(port), cwd=out))


def c_move(aet: str, port: int, study_uid: str, out: Path, dest_port: int) -> float:
    with storescp(out, dest_port):
        return float(run("movescu", "-aet", CLIENT, "-aec", aet, "-aem", DEST, "-S",
                         "-k", "QueryRetrieveLevel=STUDY",
                         "-k", f"StudyInstanceUID={study_uid}", "127.0.0.1", str(port),
                         cwd=out))


class PartCounter:
    """Counts the parts of a multipart body fed to it in chunks, and their bytes, keeping
    no more than a delimiter's length between chunks."""

    def __init__(self, boundary: str) -> None:
        self.delimiter = b"\r\n--" + boundary.encode("ascii")
        self.pending = b"\r\n"  # the body opens with a delimiter with no CRLF before it
        self.parts = 0
        self.part_bytes = 0
        self.in_headers = False
        self.done = False

    def feed(self, chunk: bytes) -> None:
        if self.done:
            return
        buf = self.pending + chunk
        pos = 0
        while True:
            if self.in_headers:
                end = buf.find(b"\r\n\r\n", pos)
                if end < 0:
                    break
                pos, self.in_headers = end + 4, False
                continue
            found = buf.find(self.delimiter, pos)
            if found < 0 or found + len(self.delimiter) + 2 > len(buf):
                keep = found if found >= 0 else max(pos, len(buf) - len(self.delimiter) - 1)
                self.part_bytes += keep - pos
                pos = keep
                break
            self.part_bytes += found - pos
            pos = found + len(self.delimiter)
            if buf[pos:pos + 2] == b"--":
                self.done = True
                return
            self.parts += 1
            self.in_headers = True
        self.pending = buf[pos:]


def wado_study(root: str, study_uid: str, headers: dict[str, str]) -> tuple[float, int, str]:
    """(seconds, body bytes, check) of one WADO-RS study retrieve, streamed to a hash."""
    started = time.perf_counter()
    digest = hashlib.sha256()
    body = 0
    with requests.get(f"{root}/studies/{study_uid}", stream=True, timeout=900,
                      headers={"Accept": DICOM_PARTS, **headers}) as response:
        response.raise_for_status()
        content_type = response.headers["Content-Type"]
        boundary = next(p.split("=", 1)[1].strip('"') for p in content_type.split(";")
                        if p.strip().startswith("boundary="))
        counter = PartCounter(boundary)
        for chunk in response.iter_content(1 << 20):
            digest.update(chunk)
            counter.feed(chunk)
            body += len(chunk)
    seconds = time.perf_counter() - started
    return seconds, body, (f"{counter.parts} parts, {counter.part_bytes / 1e6:.1f} MB in "
                           f"them, body sha256 {digest.hexdigest()[:12]}")


# --- The run -------------------------------------------------------------------------------


def run_cases(args: argparse.Namespace, scratch: Path) -> list[Row]:
    study_uid, files = write_big_study(scratch / "study", args.gb, args.large_mib)
    size = f"{total_bytes(files) / 1e9:.2f} GB"
    originals = {p.stem: p for p in files}
    study_bytes = total_bytes(files)
    dest_port = free_port()
    rows: list[Row] = []

    def case(path: str, server: str, pids: Callable[[], list[int]],
             go: Callable[[Path], float], check: Callable[[Path], str],
             fresh: Callable[[], None] = lambda: None) -> None:
        fresh()
        out = scratch / f"out-{time.monotonic_ns()}"
        idle = peaks(pids())
        log(f"{server}: {path} ...")
        try:
            seconds = go(out)
            after = peaks(pids())
            rows.append(Row(size, path, server, seconds, study_bytes, mib(idle), mib(after),
                            check(out)))
        finally:
            shutil.rmtree(out, ignore_errors=True)
        log(f"  {rows[-1].mb_s:.0f} MB/s, peak RSS {rows[-1].rss_after} MiB; {rows[-1].check}")

    portal = request_floor.Portal(scratch, None if args.sqlite else args.postgres_url)
    try:
        portal.setup()
        portal.manage("dicom_peers", "add", CLIENT, "127.0.0.1", "--store", "--query",
                      "--retrieve")
        portal.manage("dicom_peers", "add", DEST, "127.0.0.1", str(dest_port))
        started = time.perf_counter()
        portal.import_folder(scratch / "study")
        seconds = time.perf_counter() - started
        log(f"portal: imported in {seconds:.0f} s ({study_bytes / seconds / 1e6:.0f} MB/s)")
        for path, go in (
            ("C-GET (getscu)", lambda aet, port, out: c_get(aet, port, study_uid, out)),
            ("C-MOVE (storescp)",
             lambda aet, port, out: c_move(aet, port, study_uid, out, dest_port)),
        ):
            port = free_port()
            with listener(portal, port) as pids:
                case(path, "portal", lambda pids=pids: pids,  # type: ignore[misc]
                     lambda out, go=go, port=port: go("PORTAL", port, out),  # type: ignore[misc]
                     lambda out: check_received(out, originals))
        with gunicorn(portal) as (root, pids):
            auth = {"Authorization": f"Bearer {portal.token}"}
            checked: list[str] = []

            def wado(out: Path, root: str = root) -> float:
                seconds, body, check = wado_study(root, study_uid, auth)
                checked.append(check)
                assert f"{len(files)} parts" in check, check
                assert body >= study_bytes, (body, study_bytes)
                return seconds

            case("WADO-RS study", "portal", lambda: pids, wado, lambda out: checked[-1])
    finally:
        portal.drop()
        shutil.rmtree(portal.data_dir, ignore_errors=True)

    if args.no_orthanc:
        return rows
    with bench_dimse.Orthanc(dest_port, dicomweb=True) as orthanc:
        started = time.perf_counter()
        run("storescu", "-aet", CLIENT, "-aec", orthanc.aet, "+sd", "127.0.0.1",
            str(orthanc.port), str(scratch / "study"))
        seconds = time.perf_counter() - started
        log(f"Orthanc: stored in {seconds:.0f} s ({study_bytes / seconds / 1e6:.0f} MB/s)")
        server = orthanc.server

        def orthanc_pids() -> list[int]:
            return [server.process.pid]

        case("C-GET (getscu)", "Orthanc 1.10", orthanc_pids,
             lambda out: c_get(orthanc.aet, orthanc.port, study_uid, out),
             lambda out: check_received(out, originals), server.restart)
        case("C-MOVE (storescp)", "Orthanc 1.10", orthanc_pids,
             lambda out: c_move(orthanc.aet, orthanc.port, study_uid, out, dest_port),
             lambda out: check_received(out, originals), server.restart)
        orthanc_checked: list[str] = []

        def orthanc_wado(out: Path) -> float:
            seconds, _, check = wado_study(server.dicomweb_url.rstrip("/"), study_uid, {})
            orthanc_checked.append(check)
            assert f"{len(files)} parts" in check, check
            return seconds

        case("WADO-RS study", "Orthanc 1.10", orthanc_pids, orthanc_wado,
             lambda out: orthanc_checked[-1], server.restart)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gb", type=float, default=5.0)
    parser.add_argument("--large-mib", type=int, default=256)
    parser.add_argument("--sqlite", action="store_true", help="the portal on SQLite")
    parser.add_argument("--postgres-url", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--no-orthanc", action="store_true")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-big-"))
    # The study, the portal's copy, Orthanc's and one retrieved copy at a time.
    free = shutil.disk_usage(scratch).free
    if free < 4.2 * args.gb * 1e9:
        sys.exit(f"{free / 1e9:.0f} GB free in {scratch.parent}: {4.2 * args.gb:.0f} needed")
    started = time.monotonic()
    try:
        rows = run_cases(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\n{datetime.date.today()}, load average {os.getloadavg()[0]:.1f} at the end, "
          f"{os.cpu_count()} cores, {time.monotonic() - started:.0f} s in all. Peak RSS in "
          "MiB (VmHWM) of each serving process: the portal's listener parent/workers or "
          "gunicorn master/workers; Orthanc's one process; each fresh for the case.")
    print(f"{'size':8} {'path':18} {'server':13} {'s':>6} {'MB/s':>6} {'RSS idle':>12} "
          f"{'RSS after':>12}  check")
    for row in rows:
        print(f"{row.size:8} {row.path:18} {row.server:13} {row.seconds:6.1f} {row.mb_s:6.0f} "
              f"{row.rss_idle:>12} {row.rss_after:>12}  {row.check}")


if __name__ == "__main__":
    main()
