"""DICOMweb speed of the portal beside Orthanc, on the same generated data, in one run.

    .venv/bin/python bench/dicomweb.py [--background 2000 | --large] [--postgres]
                                       [--samples 20] [--keep] [--replica REDIS_URL]
                                       [--stow-batches K]
    .venv/bin/python bench/dicomweb.py --replica REDIS_URL --stow-rounds R [--stow-batches K]

Data (written once into a temporary folder, loaded into every server):

* the study under test: one CT study of 2 series x 40 slices, 512x512, 16-bit (~42 MB);
* a year-old prior of the same patient (1 series, 20 slices, 512x512);
* background filler: small (8x8) studies of many patients, CT/MR/CR/US, dates over 25
  years, up to ``--background`` instances (100,000 with ``--large``);
* two STOW sets of 100 CT instances (50 for one request, 50 for one request each): one
  for Orthanc and the portal with audit, an identical second one for the portal without.

Servers: a fresh Orthanc (bench/orthanc.py, DICOMweb plugin, loaded by parallel REST
``POST /instances``); the portal under gunicorn (``--workers 2 --threads 4``, DEBUG off,
fresh ``DATA_DIR``, SQLite or ``--postgres``, loaded with ``manage.py import_dicom``,
called with a bearer ApiToken) twice: as it runs (``portal.wsgi``, audit on) and through
``bench/audit_off_wsgi.py`` (audit write a no-op); and the machine's own limit, a threaded
loopback HTTP/1.1 server sending the same answers as static files (and a sink writing
STOW bodies to disk). With ``--replica REDIS_URL`` the portal once more (audit on) with a
replica configured (``bench/replica_settings.py``, as in ``bench/dimse.py``: a moto S3
server started here, an encryption key, the broker at ``REDIS_URL``) and a third STOW
set: every stored object then also gets its copy row and its queued replication task,
which no worker consumes here (the queue is emptied at the end). Issue 12's budget is its
STOW rows within 10% of the audit-on column's.

With ``--stow-rounds R`` only the STOW rows are measured, on the audit-on portal without
and with the replica taking turns for R rounds (a fresh serve and STOW set each time, no
Orthanc), and the medians are printed side by side with their ratio: issue 12's budget.
``--stow-batches K`` makes the batch row K requests of 50 instead of one.

Every client is one keep-alive ``requests.Session``, sequential. Latencies are p50 [p95]
of ``--samples`` requests after 3 warm-up requests.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.server
import os
import random
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

from orthanc import OrthancServer, free_port, run_sql, stop_process  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

from imaging.synthetic import ROOT, PatientSpec, SeriesSpec, write_study  # noqa: E402

PYTHON = sys.executable
GUNICORN = str(Path(sys.executable).parent / "gunicorn")
PATIENT = PatientSpec("BENCH-0001", "Benchmark^Bruna", datetime.date(1970, 1, 2), "F")
STOW_PATIENT = PatientSpec("BENCH-STOW", "Stow^Sergio", datetime.date(1980, 5, 6), "M")
FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
PORTAL_ENV_DROP = ("DATABASE_URL", "DICOM_STORAGE_DIR", "S3_BUCKET", "CELERY_BROKER_URL",
                   "REDIS_URL", "DEBUG", "REPLICA_URL", "TASKS_IN_PROCESS")
SURNAMES = ["Silva", "Santos", "Oliveira", "Souza", "Lima", "Pereira", "Ferreira", "Costa",
            "Rodrigues", "Almeida", "Nascimento", "Carvalho", "Gomes", "Martins", "Rocha"]
GIVEN = ["Ana", "Bruno", "Carla", "Diego", "Elisa", "Fabio", "Gabriela", "Heitor", "Iris",
         "Joao", "Karina", "Lucas", "Marta", "Nuno", "Olga", "Paulo", "Rita", "Sara"]
FILLER_MODALITIES = ["CT", "MR", "CR", "US", "MG", "DX"]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# --- Data -------------------------------------------------------------------------------


@dataclass
class Data:
    root: Path
    study_uid: str = ""
    study_files: list[Path] = field(default_factory=list)
    prior_uid: str = ""
    filler: Path | None = None
    filler_count: int = 0
    stow_sets: list[list[Path]] = field(default_factory=list)

    @property
    def study_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.study_files)


def write_filler(folder: Path, count: int, seed: int = 7) -> int:
    """``count`` small instances in studies of 1-3 series x 2-10 instances; cheap to write."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    pixels = bytes(range(64)) * 2  # 8x8, 16-bit
    written = 0
    patient_no = 0
    while written < count:
        patient_no += 1
        name = f"{rng.choice(SURNAMES)}^{rng.choice(GIVEN)}"
        pid = f"FILL-{patient_no:06d}"
        for _ in range(rng.randint(1, 3)):  # studies per patient
            if written >= count:
                break
            study_uid = generate_uid(ROOT)
            date = datetime.date(2000, 1, 1) + datetime.timedelta(days=rng.randint(0, 9400))
            modality = rng.choice(FILLER_MODALITIES)
            for series_no in range(1, rng.randint(1, 3) + 1):
                series_uid = generate_uid(ROOT)
                for number in range(1, rng.randint(2, 10) + 1):
                    if written >= count:
                        break
                    ds = Dataset()
                    ds.file_meta = FileMetaDataset()
                    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
                    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
                    sop = generate_uid(ROOT)
                    ds.file_meta.MediaStorageSOPInstanceUID = sop
                    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
                    ds.SOPInstanceUID = sop
                    ds.PatientName, ds.PatientID = name, pid
                    ds.PatientBirthDate, ds.PatientSex = "19600101", rng.choice("FM")
                    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
                    ds.StudyDate = ds.SeriesDate = date.strftime("%Y%m%d")
                    ds.StudyTime = "101010"
                    ds.AccessionNumber = f"F{patient_no:06d}{series_no}"
                    ds.StudyID, ds.StudyDescription = "1", f"{modality} filler"
                    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, series_no, number
                    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
                    ds.Rows = ds.Columns = 8
                    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
                    ds.PixelRepresentation = 0
                    ds.PixelData = pixels
                    ds.save_as(folder / f"{sop}.dcm", enforce_file_format=True)
                    written += 1
    return written


def make_data(root: Path, background: int, stow_sets: int = 2, stow_batches: int = 1,
              study: bool = True) -> Data:
    """The data of a run; each STOW set is ``stow_batches`` requests' worth of 50 and 50
    singles. Without ``study``, only the STOW sets (``--stow-rounds``)."""
    data = Data(root)
    today = datetime.date.today()
    if study:
        log("writing the study under test (2 x 40 CT slices, 512x512) and its prior")
        data.study_uid, data.study_files = write_study(
            root / "study", PATIENT,
            [SeriesSpec("CT", 40, description="Axial 2.5"),
             SeriesSpec("CT", 40, description="Axial 2.5 bone")],
            study_date=today, accession="BENCH-CUR", description="CT torax", seed=1)
        data.prior_uid, _ = write_study(
            root / "prior", PATIENT, [SeriesSpec("CT", 20, description="Axial prior")],
            study_date=today - datetime.timedelta(days=365), accession="BENCH-PRI",
            description="CT torax prior", seed=2)
    for n in range(stow_sets):
        _, a = write_study(root / f"stow{n}" / "batch", STOW_PATIENT,
                           [SeriesSpec("CT", 50 * stow_batches)], study_date=today,
                           accession=f"STOW-{n}A", description="STOW batch", seed=10 + n)
        _, b = write_study(root / f"stow{n}" / "single", STOW_PATIENT,
                           [SeriesSpec("CT", 50)], study_date=today,
                           accession=f"STOW-{n}B", description="STOW single", seed=20 + n)
        data.stow_sets.append(a + b)
    if background:
        log(f"writing {background} filler instances (8x8)")
        data.filler = root / "filler"
        data.filler_count = write_filler(data.filler, background)
    return data


def load_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.dcm"))


# --- Servers ----------------------------------------------------------------------------


def load_orthanc(orthanc: OrthancServer, files: list[Path], threads: int = 4) -> None:
    local = threading.local()

    def post(path: Path) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        response = session.post(f"{orthanc.url}/instances", data=path.read_bytes(), timeout=120)
        response.raise_for_status()

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(post, files))


class Portal:
    """One portal DATA_DIR (and database), served by gunicorn on demand."""

    def __init__(self, scratch: Path, postgres_url: str | None) -> None:
        self.data_dir = scratch / "portal-data"
        self.data_dir.mkdir(parents=True)
        self.postgres_url = postgres_url.rstrip("/") if postgres_url else None
        self.database = f"bench_dicomweb_{os.getpid()}"
        self.token = ""
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log_path = scratch / "gunicorn.log"
        self.extra: dict[str, str] = {}  # more settings for the next serve (the replica's)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in PORTAL_ENV_DROP}
        env.update(DATA_DIR=str(self.data_dir), DEBUG="0", ALLOWED_HOSTS="127.0.0.1",
                   LOG_LEVEL="WARNING", PYTHONPATH=str(REPO), **self.extra)
        if self.postgres_url:
            env["DATABASE_URL"] = f"{self.postgres_url}/{self.database}"
        return env

    def _sql(self, statement: str, database: str = "postgres") -> None:
        assert self.postgres_url
        run_sql(self.postgres_url, statement, database)

    def vacuum(self) -> None:
        self._sql("VACUUM (ANALYZE)", self.database)

    def setup(self) -> None:
        if self.postgres_url:
            self._sql(f'CREATE DATABASE "{self.database}"')
        self.manage("migrate", "-v0")
        self.token = self.manage("shell", "-c", (
            "from accounts.models import ApiToken, Role, User\n"
            "u = User.objects.create_user('bench', password='x' * 20, role=Role.ADMIN,"
            " is_staff=True, is_superuser=True)\n"
            "print(ApiToken.issue(u, 'bench')[1])\n")).strip().splitlines()[-1]

    def manage(self, *args: str) -> str:
        result = subprocess.run([PYTHON, "manage.py", *args], cwd=REPO, env=self.env(),
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {args[0]} failed:\n{result.stderr[-3000:]}")
        return result.stdout

    def import_folder(self, folder: Path) -> None:
        # One worker on PostgreSQL: two import workers creating the same new patient at
        # once can deadlock there (seen with import_dicom --workers 2; ingest's bug).
        workers = 1 if self.postgres_url else 2
        self.manage("import_dicom", str(folder), "--no-progress", "--workers", str(workers))

    @contextmanager
    def serve(self, app: str) -> Iterator[str]:
        self.port = free_port()
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                [GUNICORN, app, "--workers", "2", "--threads", "4",
                 "--bind", f"127.0.0.1:{self.port}", "--chdir", str(REPO),
                 "--log-level", "warning",
                 "--timeout", "300"],
                env=self.env(), stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        url = f"http://127.0.0.1:{self.port}/dicomweb"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    r = requests.get(f"{url}/studies?limit=1", timeout=60,
                                     headers={"Authorization": f"Bearer {self.token}"})
                    if r.status_code == 200:
                        break
                except (requests.ConnectionError, requests.Timeout):
                    pass
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"gunicorn did not start: see {self.log_path}")
                time.sleep(0.2)
            yield url
        finally:
            stop_process(self.process)
            self.process = None

    def drop(self) -> None:
        if self.postgres_url:
            try:
                self._sql(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            except Exception as exc:
                log(f"could not drop {self.database}: {exc}")


class StaticServer:
    """The machine's limit: a threaded HTTP/1.1 server sending files; POST writes to disk."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        sink = folder / "sink"

        class Handler(http.server.SimpleHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def __init__(self, *args: object, **kwargs: object) -> None:
                super().__init__(*args, directory=str(folder), **kwargs)  # type: ignore[misc]

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in separate writes: without this, Nagle's
                # algorithm and the client's delayed ACK add ~40 ms to every answer.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args: object) -> None:
                pass

            def guess_type(self, path: object) -> str:
                return "application/octet-stream"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                with open(sink / secrets.token_hex(8), "wb") as fp:
                    while length > 0:
                        chunk = self.rfile.read(min(1 << 20, length))
                        if not chunk:
                            break
                        fp.write(chunk)
                        length -= len(chunk)
                body = b"{}"
                self.send_response(200)
                self.send_header("Content-Type", "application/dicom+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        sink.mkdir(exist_ok=True)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def put(self, name: str, data: bytes) -> str:
        (self.folder / name).write_bytes(data)
        return f"{self.url}/{name}"

    def __enter__(self) -> StaticServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --- Measuring --------------------------------------------------------------------------


@dataclass
class Latency:
    samples: list[float]

    @property
    def p50(self) -> float:
        return statistics.median(self.samples) * 1000

    @property
    def p95(self) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] * 1000


def timed(session: requests.Session, samples: int, call: Callable[[requests.Session], None],
          warmup: int = 3) -> Latency:
    for _ in range(warmup):
        call(session)
    out = []
    for _ in range(samples):
        start = time.perf_counter()
        call(session)
        out.append(time.perf_counter() - start)
    return Latency(out)


def get(url: str, accept: str | None = None, expect: int = 200) -> Callable[[requests.Session],
                                                                           None]:
    headers = {"Accept": accept} if accept else {}

    def call(session: requests.Session) -> None:
        r = session.get(url, headers=headers, timeout=300)
        if r.status_code != expect:
            raise RuntimeError(f"GET {url} -> {r.status_code}: {r.text[:300]}")

    return call


def multipart(files: list[Path]) -> tuple[bytes, str]:
    boundary = secrets.token_hex(16)
    parts = []
    for path in files:
        parts.append(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        parts.append(path.read_bytes())
        parts.append(b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f'multipart/related; type="application/dicom"; boundary={boundary}'


@dataclass
class Result:
    values: dict[str, tuple[float, float | None]] = field(default_factory=dict)

    def set(self, key: str, value: float, p95: float | None = None) -> None:
        self.values[key] = (value, p95)


def first_uids(session: requests.Session, root: str, study: str) -> dict[str, str]:
    """Series and instance UIDs of the study, from QIDO (the same on every server)."""
    series = session.get(f"{root}/studies/{study}/series", timeout=60).json()
    ordered = sorted(series, key=lambda s: s.get("00200011", {}).get("Value", [0])[0])
    series_uid = ordered[0]["0020000E"]["Value"][0]
    instances = session.get(f"{root}/studies/{study}/series/{series_uid}/instances",
                            timeout=60).json()
    instances.sort(key=lambda i: i.get("00200013", {}).get("Value", [0])[0])
    middle = instances[len(instances) // 2]["00080018"]["Value"][0]
    return {"series": series_uid, "instance": middle,
            "series2": ordered[-1]["0020000E"]["Value"][0]}


def measure(root: str, session: requests.Session, data: Data, stow_files: list[Path] | None,
            samples: int, static: StaticServer | None = None) -> Result:
    """Every row of the table against one DICOMweb root. With ``static`` the answers are
    also saved there, for the limit column."""
    res = Result()
    study, prior = data.study_uid, data.prior_uid
    uids = first_uids(session, root, study)
    prior_uids = first_uids(session, root, prior)
    frame = (f"{root}/studies/{study}/series/{uids['series']}/instances/{uids['instance']}"
             "/frames/1")
    queries = {
        "QIDO study by PatientID": f"{root}/studies?PatientID={PATIENT.patient_id}",
        "QIDO study by name wildcard": f"{root}/studies?PatientName=Benchmark*",
        "QIDO study by date range": (f"{root}/studies?StudyDate="
                                     f"{datetime.date.today():%Y%m%d}-"
                                     f"{datetime.date.today():%Y%m%d}"),
        "QIDO ModalitiesInStudy=CT&limit=25": f"{root}/studies?ModalitiesInStudy=CT&limit=25",
        "QIDO a study's 80 instances": f"{root}/studies/{study}/instances",
    }
    for label, url in queries.items():
        answer = session.get(url, timeout=60)
        answer.raise_for_status()
        if label != "QIDO ModalitiesInStudy=CT&limit=25":
            assert answer.json(), f"{label}: no match at {url}"
        lat = timed(session, samples, get(url))
        res.set(label, lat.p50, lat.p95)
        if static:
            static.put(label.replace(" ", "_").replace("/", "_"), answer.content)

    # WADO-RS whole study: MB/s over the body, and time to first byte.
    def whole_study() -> tuple[float, float, int]:
        start = time.perf_counter()
        with session.get(f"{root}/studies/{study}", stream=True, timeout=300,
                         headers={"Accept": 'multipart/related; type="application/dicom"'}) as r:
            r.raise_for_status()
            first = None
            size = 0
            for chunk in r.iter_content(1 << 20):
                if first is None:
                    first = time.perf_counter() - start
                size += len(chunk)
        return time.perf_counter() - start, first or 0.0, size

    whole_study()
    runs = [whole_study() for _ in range(max(3, samples // 4))]
    total, ttfb, size = (statistics.median(r[0] for r in runs),
                         statistics.median(r[1] for r in runs), runs[0][2])
    res.set("WADO study MB/s", size / total / 1e6)
    res.set("WADO study first byte", ttfb * 1000)
    res.set("WADO study bytes", size)
    if static:
        with session.get(f"{root}/studies/{study}", timeout=300) as r:
            static.put("study.multipart", r.content)

    for label, url, accept in [
        ("WADO series metadata (40)",
         f"{root}/studies/{study}/series/{uids['series']}/metadata", "application/dicom+json"),
        ("WADO one frame (OHIF Accept)", frame, FRAME_ACCEPT),
        ("WADO rendered JPEG",
         f"{root}/studies/{study}/series/{uids['series']}/instances/{uids['instance']}"
         "/rendered", "image/jpeg"),
    ]:
        answer = session.get(url, headers={"Accept": accept}, timeout=60)
        if answer.status_code != 200 and accept == FRAME_ACCEPT:
            # Orthanc's plugin may refuse transfer-syntax=*; ask as older OHIF does.
            accept = 'multipart/related; type="application/octet-stream"'
            answer = session.get(url, headers={"Accept": accept}, timeout=60)
            label += " [no ts=*]"
        answer.raise_for_status()
        lat = timed(session, samples, get(url, accept))
        res.set(label.split(" [")[0], lat.p50, lat.p95)
        if static:
            static.put(label.split(" [")[0].replace(" ", "_"), answer.content)

    # The first image of a year-old prior, as a viewer finds it.
    year_ago = datetime.date.today() - datetime.timedelta(days=300)

    def prior_sequence(s: requests.Session) -> None:
        studies = s.get(f"{root}/studies?PatientID={PATIENT.patient_id}"
                        f"&StudyDate=-{year_ago:%Y%m%d}", timeout=60).json()
        uid = studies[0]["0020000D"]["Value"][0]
        series = s.get(f"{root}/studies/{uid}/series", timeout=60).json()
        series_uid = series[0]["0020000E"]["Value"][0]
        instances = s.get(f"{root}/studies/{uid}/series/{series_uid}/instances",
                          timeout=60).json()
        sop = instances[len(instances) // 2]["00080018"]["Value"][0]
        r = s.get(f"{root}/studies/{uid}/series/{series_uid}/instances/{sop}/frames/1/rendered",
                  headers={"Accept": "image/jpeg"}, timeout=60)
        r.raise_for_status()

    assert prior_uids
    lat = timed(session, samples, prior_sequence)
    res.set("prior: 3 QIDO + rendered frame", lat.p50, lat.p95)

    if stow_files is not None:
        res.values.update(stow(root, session, stow_files).values)
    return res


def post_stow(root: str, session: requests.Session, files: list[Path], what: str,
              timeout: float = 120) -> float:
    """STOW ``files`` in one request; the seconds it took (the body is built before)."""
    body, content_type = multipart(files)
    start = time.perf_counter()
    r = session.post(f"{root}/studies", data=body, headers={
        "Content-Type": content_type, "Accept": "application/dicom+json"}, timeout=timeout)
    elapsed = time.perf_counter() - start
    if r.status_code != 200:
        raise RuntimeError(f"STOW {what} -> {r.status_code}: {r.text[:500]}")
    return elapsed


def stow(root: str, session: requests.Session, files: list[Path]) -> Result:
    """The STOW rows on ``files``: all but the last 50 in requests of 50 (one rate over
    them all), then the last 50 one a request (the first of them an untimed warm-up)."""
    res = Result()
    batch, singles = files[:-50], files[-50:]
    # A server's first write after it starts carries its one-off set-up (with a replica:
    # the broker connection, the task modules): one instance, untimed, goes first.
    post_stow(root, session, singles[:1], "warm-up")
    elapsed = sum(post_stow(root, session, batch[at:at + 50], "batch", timeout=600)
                  for at in range(0, len(batch), 50))
    res.set("STOW 50 a request inst/s", len(batch) / elapsed)
    times = [post_stow(root, session, [path], "single") for path in singles[1:]]
    lat = Latency(times)
    res.set("STOW 1 a request ms", lat.p50, lat.p95)
    return res


def measure_static(static: StaticServer, session: requests.Session, samples: int,
                   stow_files: list[Path]) -> Result:
    res = Result()
    base = static.url
    names = {
        "QIDO study by PatientID": "QIDO_study_by_PatientID",
        "QIDO study by name wildcard": "QIDO_study_by_name_wildcard",
        "QIDO study by date range": "QIDO_study_by_date_range",
        "QIDO ModalitiesInStudy=CT&limit=25": "QIDO_ModalitiesInStudy=CT&limit=25",
        "QIDO a study's 80 instances": "QIDO_a_study's_80_instances",
        "WADO series metadata (40)": "WADO_series_metadata_(40)",
        "WADO one frame (OHIF Accept)": "WADO_one_frame_(OHIF_Accept)",
        "WADO rendered JPEG": "WADO_rendered_JPEG",
    }
    from urllib.parse import quote

    for label, name in names.items():
        lat = timed(session, samples, get(f"{base}/{quote(name)}"))
        res.set(label, lat.p50, lat.p95)
    url = f"{base}/study.multipart"

    def whole() -> tuple[float, float, int]:
        start = time.perf_counter()
        with session.get(url, stream=True, timeout=300) as r:
            first, size = None, 0
            for chunk in r.iter_content(1 << 20):
                if first is None:
                    first = time.perf_counter() - start
                size += len(chunk)
        return time.perf_counter() - start, first or 0.0, size

    whole()
    runs = [whole() for _ in range(max(3, samples // 4))]
    res.set("WADO study MB/s", runs[0][2] / statistics.median(r[0] for r in runs) / 1e6)
    res.set("WADO study first byte", statistics.median(r[1] for r in runs) * 1000)
    q = f"{base}/{quote(names['QIDO study by PatientID'])}"
    img = f"{base}/{quote(names['WADO rendered JPEG'])}"

    def prior(s: requests.Session) -> None:
        for u in (q, q, q, img):
            s.get(u, timeout=60).raise_for_status()

    lat = timed(session, samples, prior)
    res.set("prior: 3 QIDO + rendered frame", lat.p50, lat.p95)
    res.values.update(stow(base, session, stow_files).values)
    return res


# --- Report -----------------------------------------------------------------------------

ROWS = [
    ("STOW 50 a request inst/s", "inst/s", True),
    ("STOW 1 a request ms", "ms", False),
    ("QIDO study by PatientID", "ms", False),
    ("QIDO study by name wildcard", "ms", False),
    ("QIDO study by date range", "ms", False),
    ("QIDO ModalitiesInStudy=CT&limit=25", "ms", False),
    ("QIDO a study's 80 instances", "ms", False),
    ("WADO study MB/s", "MB/s", True),
    ("WADO study first byte", "ms", False),
    ("WADO series metadata (40)", "ms", False),
    ("WADO one frame (OHIF Accept)", "ms", False),
    ("WADO rendered JPEG", "ms", False),
    ("prior: 3 QIDO + rendered frame", "ms", False),
]


def fmt(value: tuple[float, float | None] | None) -> str:
    if value is None:
        return "-"
    v, p95 = value
    text = f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"
    if p95 is not None:
        text += f" [{p95:.0f}]" if p95 >= 100 else f" [{p95:.1f}]"
    return text


def report(columns: dict[str, Result]) -> str:
    names = list(columns)
    header = ["what", "unit", *names, "portal/Orthanc"]
    lines = []
    for key, unit, higher_better in ROWS:
        row = [key, unit + (" (more is better)" if higher_better else "")]
        for name in names:
            row.append(fmt(columns[name].values.get(key)))
        orth = columns.get("Orthanc", Result()).values.get(key)
        port = columns.get("portal (audit on)", Result()).values.get(key)
        row.append(f"{port[0] / orth[0]:.2f}x" if orth and port and orth[0] else "-")
        lines.append(row)
    widths = [max(len(str(r[i])) for r in [header, *lines]) for i in range(len(header))]
    out = [" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out.append("-|-".join("-" * w for w in widths))
    out += [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in lines]
    return "\n".join(out)


@contextmanager
def replica_configured(portal: Portal, redis_url: str) -> Iterator[None]:
    """The portal's next serves with a replica configured (a moto server started here, the
    tasks queued to ``redis_url`` and not consumed)."""
    from replica_settings import replica_env

    from tests.s3_support import MotoServer

    moto = MotoServer().start()
    try:
        portal.extra = replica_env(moto.url, redis_url)
        yield
    finally:
        portal.extra = {}
        moto.stop()


def measure_replicated(portal: Portal, data: Data, samples: int, redis_url: str) -> Result:
    """The audit-on portal's rows with a replica configured, STOW on the third set."""
    with replica_configured(portal, redis_url), portal.serve("portal.wsgi:application") as root, \
            requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {portal.token}"
        return measure(root, session, data, data.stow_sets[2], samples)


def stow_rounds(portal: Portal, data: Data, rounds: int, redis_url: str
                ) -> dict[str, list[Result]]:
    """The STOW rows of the audit-on portal without and with a replica, taking turns for
    ``rounds`` rounds, each serve fresh and each on a STOW set of its own."""
    from replica_settings import broker_env

    found: dict[str, list[Result]] = {"replica off": [], "replica on (queued)": []}
    sets = iter(data.stow_sets)
    for number in range(rounds):
        for name in found:
            with contextlib.ExitStack() as stack:
                if name == "replica off":
                    portal.extra = broker_env(redis_url)  # the same cache and broker
                    stack.callback(lambda: setattr(portal, "extra", {}))
                else:
                    stack.enter_context(replica_configured(portal, redis_url))
                root = stack.enter_context(portal.serve("portal.wsgi:application"))
                session = stack.enter_context(requests.Session())
                session.headers["Authorization"] = f"Bearer {portal.token}"
                found[name].append(stow(root, session, next(sets)))
            log(f"round {number + 1}: {name} measured; load average {loadavg()}")
    return found


def stow_report(found: dict[str, list[Result]]) -> str:
    """Medians (range) of the rounds, and each column's rate over the first's."""
    names = list(found)
    lines = ["| what | " + " | ".join(names) + f" | {names[-1]} / {names[0]} |",
             "|---|" + "---|" * (len(names) + 1)]
    for key, _unit, higher_better in ROWS[:2]:
        medians = []
        cells = []
        for name in names:
            values = [r.values[key][0] for r in found[name]]
            medians.append(statistics.median(values))
            cells.append(f"{medians[-1]:.1f} ({min(values):.1f}-{max(values):.1f})")
        ratio = medians[-1] / medians[0] if higher_better else medians[0] / medians[-1]
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {ratio:.2f}x |")
    return "\n".join(lines)


def clean_up(portal: Portal, scratch: Path, args: argparse.Namespace) -> None:
    """The portal's database dropped, the broker's queue emptied, the scratch removed."""
    portal.drop()
    if args.replica:
        subprocess.run(["redis-cli", "-u", args.replica, "flushdb"], check=False,
                       capture_output=True)
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)


def machine_line(load_before: str, started: float) -> str:
    return (f"machine: {os.cpu_count()} CPUs, {socket.gethostname()}; load average before "
            f"{load_before}, after {loadavg()}; {time.monotonic() - started:.0f}s in all\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--background", type=int, default=2000,
                        help="filler instances besides the study under test (default 2000)")
    parser.add_argument("--large", action="store_true", help="100,000 filler instances")
    parser.add_argument("--postgres", action="store_true", help="the portal on PostgreSQL")
    parser.add_argument("--postgres-url", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--replica", metavar="REDIS_URL", default="",
                        help="also the portal with a replica, its tasks queued to REDIS_URL")
    parser.add_argument("--stow-rounds", type=int, default=0, metavar="R",
                        help="only STOW-RS, the portal with --replica off and on taking "
                             "turns for R rounds (no Orthanc, no other rows)")
    parser.add_argument("--stow-batches", type=int, default=None, metavar="K",
                        help="requests of 50 in each STOW batch row (default 1; 6 with "
                             "--stow-rounds: two a round were too few to see 10%%)")
    args = parser.parse_args()
    if args.stow_batches is None:
        args.stow_batches = 6 if args.stow_rounds else 1
    if args.stow_rounds:
        if not args.replica:
            parser.error("--stow-rounds needs --replica REDIS_URL")
        main_stow_rounds(args)
        return
    background = 100_000 if args.large else args.background

    scratch = Path(tempfile.mkdtemp(prefix="bench-dicomweb-"))
    load_before = loadavg()
    started = time.monotonic()
    portal = Portal(scratch, args.postgres_url if args.postgres else None)
    columns: dict[str, Result] = {}
    try:
        data = make_data(scratch / "data", background, 3 if args.replica else 2,
                         args.stow_batches)
        data_files = [*data.study_files, *load_files(scratch / "data" / "prior")]
        filler_files = load_files(data.filler) if data.filler else []
        log(f"data written in {time.monotonic() - started:.0f}s; load average {loadavg()}")

        with OrthancServer() as orthanc:
            t = time.monotonic()
            load_orthanc(orthanc, data_files + filler_files)
            log(f"Orthanc loaded {len(data_files) + len(filler_files)} instances in "
                f"{time.monotonic() - t:.0f}s")
            with requests.Session() as session:
                columns["Orthanc"] = measure(orthanc.dicomweb_url.rstrip("/"), session, data,
                                             data.stow_sets[0], args.samples)
            log(f"Orthanc measured; load average {loadavg()}")

        portal.setup()
        t = time.monotonic()
        if data.filler:
            portal.import_folder(data.filler)
        portal.import_folder(scratch / "data" / "study")
        portal.import_folder(scratch / "data" / "prior")
        log(f"portal loaded in {time.monotonic() - t:.0f}s")
        if portal.postgres_url:
            # What autovacuum would do in the next minutes, done now, so that it does not
            # run during the measurements (Orthanc's SQLite index has no such job).
            portal.vacuum()
            log(f"portal database vacuumed; load average {loadavg()}")
        static = StaticServer(scratch / "static")
        with static:
            for name, app, stow_set in [
                ("portal (audit on)", "portal.wsgi:application", data.stow_sets[0]),
                ("portal (audit off)", "bench.audit_off_wsgi:application", data.stow_sets[1]),
            ]:
                with portal.serve(app) as root, requests.Session() as session:
                    session.headers["Authorization"] = f"Bearer {portal.token}"
                    columns[name] = measure(root, session, data, stow_set, args.samples,
                                            static if name == "portal (audit on)" else None)
                log(f"{name} measured; load average {loadavg()}")
            if args.replica:
                columns["portal (replica queued)"] = measure_replicated(
                    portal, data, args.samples, args.replica)
                log(f"portal (replica queued) measured; load average {loadavg()}")
            with requests.Session() as session:
                columns["limit (static)"] = measure_static(static, session, args.samples,
                                                           data.stow_sets[1])
    finally:
        clean_up(portal, scratch, args)
    db = "PostgreSQL" if args.postgres else "SQLite"
    print(f"\nDICOMweb, sequential keep-alive client; portal on {db}, gunicorn 2 workers x 4 "
          f"threads; {80} + 20 prior + {background} background instances; "
          f"{args.samples} samples, p50 [p95]")
    print(machine_line(load_before, started))
    print(report(columns))
    size = columns["Orthanc"].values.get("WADO study bytes")
    if size:
        print(f"\nWADO study body: {size[0] / 1e6:.1f} MB (80 instances)")


def main_stow_rounds(args: argparse.Namespace) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="bench-dicomweb-"))
    load_before = loadavg()
    started = time.monotonic()
    portal = Portal(scratch, args.postgres_url if args.postgres else None)
    try:
        data = make_data(scratch / "data", 0, 2 * args.stow_rounds, args.stow_batches,
                         study=False)
        portal.setup()
        found = stow_rounds(portal, data, args.stow_rounds, args.replica)
    finally:
        clean_up(portal, scratch, args)
    db = "PostgreSQL" if args.postgres else "SQLite"
    print(f"\nSTOW-RS, the portal (audit on) on {db}, gunicorn 2 workers x 4 threads, "
          f"replica off and on taking turns; {args.stow_rounds} rounds, {args.stow_batches} "
          f"request(s) of 50 and 49 of 1 each; median (range)")
    print(machine_line(load_before, started))
    print(stow_report(found))


if __name__ == "__main__":
    main()
