"""OHIF's first image, served by the portal beside Orthanc: the same OHIF build, the same
studies, the same browser, from OHIF's first DICOMweb request to the image drawn.

    .venv/bin/python bench/ohif_first_image.py [--rounds 5] [--slices 150] [--waterfall]

Data: one patient with a current CT study (two series, ``--slices`` and 30 slices,
512x512, 16-bit) and the same patient's CT of a year before (two series, ``--slices`` - 30
and 30 slices), written with ``imaging.synthetic`` and loaded into both servers.

Servers, both on loopback:

* ``portal``: gunicorn as ``bin/portal`` starts it (``--preload``, 2 workers, 4 threads),
  DEBUG off, audit on, a fresh PostgreSQL database (``--postgres-url``), loaded with
  ``manage.py import_dicom``. The browser is a doctor with an ``AccessGrant`` to the
  patient and a TOTP-verified session (the second factor on, as in production), so every
  request pays the session, the second-factor check, the policy and the audit.
* ``Orthanc``: a fresh Orthanc 1.10 with its DICOMweb plugin (bench/orthanc.py, its
  defaults), loaded by ``POST /instances``, behind nginx on one origin, as Orthanc's own
  OHIF setups run it: nginx sends the unmodified OHIF ``dist/`` at ``/`` (its gzip copies
  with ``gzip_static``, every route falling back to index.html) and proxies
  ``/dicom-web/`` to Orthanc over keep-alive connections. Its ``app-config.js`` is the one
  the portal generates (``viewer.ohif.app_config``: same data-source options, same
  ``maxNumRequests``), pointed at ``/dicom-web``. nginx adds well under a millisecond a
  request; the portal has no proxy in front.

Browser: headless Chromium (``/usr/bin/chromium``), a new context (empty profile and cache)
for every page load, 1280x900. Three cases, each a fresh load:

* ``current``: ``/viewer?StudyInstanceUIDs=<current>``;
* ``prior``: the year-old prior opened alone;
* ``compare``: both, ``viewer.ohif.study_query(current, prior)`` (``@ohif/hpCompare``).

The clock is the page's own (``performance.now()``): from the ``startTime`` of OHIF's first
DICOMweb request (Resource Timing) to cornerstone's first ``CORNERSTONE_IMAGE_RENDERED`` on
a viewport element after it got an image of the study (``CORNERSTONE_STACK_NEW_IMAGE``,
whose image id names the study); for ``compare`` the later of the current's and the
prior's. After each load the drawn viewports are checked from the page: a canvas
screenshot must show an image, not a flat colour (not timed).

One untimed load per server first (gunicorn workers compress the bundles they rewrite on
their first request for each, OHIF's files come into the OS cache); then ``--rounds``
rounds, servers taking turns and the first server alternating, median [min-max] printed
side by side with the ratio. ``--waterfall`` prints, for the last load of each case and
server, every DICOMweb request from the first one on: start, time to first byte, end.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

from orthanc import OrthancServer, free_port, run_sql, stop_process  # noqa: E402

from imaging.synthetic import PatientSpec, SeriesSpec, write_study  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update"]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PYTHON = sys.executable
GUNICORN = str(Path(sys.executable).parent / "gunicorn")
PATIENT = PatientSpec("BENCH-OHIF-1", "Benchmark^Beatriz", datetime.date(1968, 7, 21), "F")
PORTAL_ENV_DROP = ("DATABASE_URL", "DICOM_STORAGE_DIR", "S3_BUCKET", "CELERY_BROKER_URL",
                   "REDIS_URL", "DEBUG", "REQUIRE_2FA")
CASES = ("current", "prior", "compare")
LOAD_TIMEOUT_S = 120

# Installed before any page script: cornerstone's events reach a capturing listener on the
# document (they do not bubble). Times are performance.now(), the Resource Timing clock.
INSTRUMENT = """
performance.setResourceTimingBufferSize(10000);
window.__bench = {studyOf: new Map(), drawn: {}};
document.addEventListener('CORNERSTONE_STACK_NEW_IMAGE', (event) => {
  const imageId = (event.detail && event.detail.imageId) || '';
  const match = imageId.match(/\\/studies\\/([^/]+)\\//);
  if (match) window.__bench.studyOf.set(event.target, match[1]);
}, true);
document.addEventListener('CORNERSTONE_IMAGE_RENDERED', (event) => {
  const study = window.__bench.studyOf.get(event.target);
  if (study && !(study in window.__bench.drawn)) window.__bench.drawn[study] = performance.now();
}, true);
"""
READ = """(marker) => {
  const all = performance.getEntriesByType('resource');
  const dicomweb = all.filter(e => e.name.includes(marker));
  const first = dicomweb.length ? Math.min(...dicomweb.map(e => e.startTime)) : null;
  return {first, drawn: window.__bench.drawn,
          requests: all.filter(e => first !== null && e.startTime >= first).map(e => ({
            url: e.name, dicomweb: e.name.includes(marker), start: e.startTime,
            firstByte: e.responseStart, end: e.responseEnd}))};
}"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- Data -------------------------------------------------------------------------------


@dataclass
class Data:
    folder: Path
    current: str = ""
    prior: str = ""
    files: int = 0
    bytes: int = 0


def make_data(folder: Path, slices: int) -> Data:
    data = Data(folder)
    today = datetime.date(2026, 3, 2)
    for name, date, series, seed in [
        ("current", today, [SeriesSpec("CT", slices, description="Axial 1.25 mm"),
                            SeriesSpec("CT", 30, description="Coronal MPR")], 3),
        ("prior", today.replace(year=today.year - 1),
         [SeriesSpec("CT", max(slices - 30, 30), description="Axial 1.25 mm"),
          SeriesSpec("CT", 30, description="Coronal MPR")], 5),
    ]:
        uid, paths = write_study(folder / name, PATIENT, series, study_date=date,
                                 accession=f"BENCH-{name}", description=f"CT tórax {name}",
                                 seed=seed)
        setattr(data, name, uid)
        data.files += len(paths)
        data.bytes += sum(p.stat().st_size for p in paths)
    return data


# --- The portal -------------------------------------------------------------------------

SESSION_SCRIPT = """
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice
from accounts.models import AccessGrant, Clinic, Role, User
from imaging.models import Patient
clinic = Clinic.objects.get_or_create(name="Clínica Bench")[0]
patient = Patient.objects.get(patient_id=%r)
patient.clinic = clinic
patient.save()
doctor = User.objects.create_user("doctor", password="x" * 20, role=Role.DOCTOR,
                                  first_name="Daniela", last_name="Bench")
doctor.clinics.add(clinic)
AccessGrant.objects.create(doctor=doctor, patient=patient, clinic=clinic)
device = TOTPDevice.objects.create(user=doctor, name="bench", confirmed=True)
client = Client()
client.force_login(doctor)
session = client.session
session["otp_device_id"] = device.persistent_id
session.save()
print(session.session_key)
"""


class Site:
    """A server the browser loads OHIF from: where (one origin on loopback), how OHIF's
    viewer route is reached there, and the DICOMweb path that marks its requests."""

    marker = ""
    viewer_path = ""

    def __init__(self) -> None:
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, query: str) -> str:
        return f"{self.base}{self.viewer_path}?{query}"

    def cookies(self) -> list[dict[str, str]]:
        return []


class Portal(Site):
    """A fresh DATA_DIR and PostgreSQL database, served by gunicorn as bin/portal runs it."""

    marker = "/dicomweb/"
    viewer_path = "/viewer/viewer"

    def __init__(self, scratch: Path, postgres_url: str) -> None:
        super().__init__()
        self.data_dir = scratch / "portal-data"
        self.data_dir.mkdir()
        self.postgres_url = postgres_url.rstrip("/")
        self.database = f"bench_ohif_{os.getpid()}"
        self.log_path = scratch / "gunicorn.log"
        self.session = ""

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in PORTAL_ENV_DROP}
        env.update(DATA_DIR=str(self.data_dir), DEBUG="0", ALLOWED_HOSTS="127.0.0.1",
                   LOG_LEVEL="WARNING", PYTHONPATH=str(REPO), TASKS_IN_PROCESS="1",
                   DATABASE_URL=f"{self.postgres_url}/{self.database}")
        return env

    def manage(self, *args: str) -> str:
        result = subprocess.run([PYTHON, "manage.py", *args], cwd=REPO, env=self.env(),
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {args[0]} failed:\n{result.stderr[-3000:]}")
        return result.stdout

    def load(self, data: Data) -> None:
        run_sql(self.postgres_url, f'CREATE DATABASE "{self.database}"')
        self.manage("migrate", "-v0")
        self.manage("import_dicom", str(data.folder), "--no-progress", "--workers", "1")
        run_sql(self.postgres_url, "VACUUM (ANALYZE)", self.database)
        self.session = self.manage("shell", "-c", SESSION_SCRIPT % PATIENT.patient_id
                                   ).strip().splitlines()[-1]

    @contextmanager
    def serving(self) -> Iterator[None]:
        self.port = free_port()
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                [GUNICORN, "portal.wsgi", "--preload", "--bind", f"127.0.0.1:{self.port}",
                 "--workers", "2", "--threads", "4", "--log-level", "warning"],
                cwd=REPO, env=self.env(), stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_http(f"{self.base}/accounts/login/", self.process, self.log_path)
            yield
        finally:
            stop_process(self.process)

    def cookies(self) -> list[dict[str, str]]:
        return [{"name": "sessionid", "value": self.session, "url": self.base}]

    def drop(self) -> None:
        try:
            run_sql(self.postgres_url, f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        except Exception as exc:  # cleanup: say so and go on
            log(f"could not drop {self.database}: {exc}")


def wait_http(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            urllib.request.urlopen(url, timeout=5)
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer: see {log_path}")


# --- Orthanc behind nginx ---------------------------------------------------------------

NGINX_CONF = """
daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 256; }}
http {{
  include /etc/nginx/mime.types;
  types {{ application/wasm wasm; }}
  access_log off;
  client_body_temp_path {root}/tmp-body;
  proxy_temp_path {root}/tmp-proxy;
  fastcgi_temp_path {root}/tmp-fastcgi;
  uwsgi_temp_path {root}/tmp-uwsgi;
  scgi_temp_path {root}/tmp-scgi;
  sendfile on;
  tcp_nodelay on;
  keepalive_requests 10000;
  upstream orthanc {{ server 127.0.0.1:{orthanc_port}; keepalive 16; }}
  server {{
    listen 127.0.0.1:{port};
    root {dist};
    gzip_static on;
    location = /app-config.js {{ alias {root}/app-config.js; add_header Cache-Control no-cache; }}
    location /dicom-web/ {{
      proxy_pass http://orthanc;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_buffering off;
      proxy_read_timeout 300s;
    }}
    location / {{ try_files $uri /index.html; }}
  }}
}}
"""


class OrthancSite(Site):
    """Orthanc with DICOMweb, and nginx sending OHIF and proxying /dicom-web/ on one origin."""

    marker = "/dicom-web/"
    viewer_path = "/viewer"

    def __init__(self, scratch: Path, dist: Path) -> None:
        super().__init__()
        self.root = scratch / "nginx"
        self.root.mkdir()
        # nginx started as root serves as an unprivileged user: it must reach app-config.js.
        for folder in (scratch, self.root):
            folder.chmod(0o755)
        self.dist = dist
        self.orthanc = OrthancServer()

    def load(self, data: Data) -> None:
        import requests

        self.orthanc.start()
        local = threading.local()

        def post(path: Path) -> None:
            session = getattr(local, "session", None) or requests.Session()
            local.session = session
            session.post(f"{self.orthanc.url}/instances", data=path.read_bytes(),
                         timeout=120).raise_for_status()

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(post, sorted(data.folder.rglob("*.dcm"))))

    @contextmanager
    def serving(self) -> Iterator[None]:
        from viewer import ohif

        self.port = free_port()
        (self.root / "app-config.js").write_text(ohif.app_config(
            dicomweb_root=f"{self.base}/dicom-web", router_basename="/",
            shared_array_buffer=False))
        conf = self.root / "nginx.conf"
        conf.write_text(NGINX_CONF.format(root=self.root, port=self.port, dist=self.dist,
                                          orthanc_port=self.orthanc.http_port))
        log_path = self.root / "error.log"
        self.process = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(self.root)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            wait_http(f"{self.base}/dicom-web/studies?limit=1", self.process, log_path)
            yield
        finally:
            stop_process(self.process)

    def drop(self) -> None:
        self.orthanc.stop()


# --- Measuring --------------------------------------------------------------------------


@dataclass
class Load:
    seconds: float
    requests: list[dict[str, Any]] = field(default_factory=list)
    first: float = 0.0


def measure(browser: Any, site: Site, query: str, studies: list[str]) -> Load:
    """One load in a new browser context: seconds from OHIF's first DICOMweb request until
    every study in ``studies`` has an image drawn; then the drawn canvases are checked."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    try:
        if site.cookies():
            context.add_cookies(site.cookies())
        context.add_init_script(INSTRUMENT)
        page = context.new_page()
        started = time.monotonic()
        page.goto(site.url(query))
        while True:
            found = page.evaluate(READ, site.marker)
            if found["first"] is not None and all(s in found["drawn"] for s in studies):
                break
            if time.monotonic() - started > LOAD_TIMEOUT_S:
                raise RuntimeError(f"no image of {studies} in {LOAD_TIMEOUT_S} s at "
                                   f"{site.url(query)}: {found['drawn']}")
            page.wait_for_timeout(10)
        drawn = max(found["drawn"][s] for s in studies)
        check_drawn(page, len(studies))
        return Load((drawn - found["first"]) / 1000, found["requests"], found["first"])
    finally:
        context.close()


def check_drawn(page: Any, count: int) -> None:
    """At least ``count`` viewports show an image (a spread of grey levels), from the page."""
    import io

    from PIL import Image

    shown = 0
    for canvas in page.query_selector_all("canvas.cornerstone-canvas"):
        box = canvas.bounding_box()
        if not box or box["width"] < 32:
            continue
        image = Image.open(io.BytesIO(canvas.screenshot())).convert("L")
        low, high = cast(tuple[int, int], image.getextrema())
        shown += int(high - low > 40)
    if shown < count:
        raise RuntimeError(f"{shown} viewports show an image, expected {count}")


PHASES = ("QIDO and metadata", "OHIF until it asks a frame", "first frame", "decoded, drawn")


def phases(load: Load) -> tuple[float, float, float, float]:
    """Where a load's time went, ms, from OHIF's first DICOMweb request: until the last
    answer before the first frame request; then OHIF alone (display sets, viewports, the
    decoder) until it asks a frame; that frame's round trip; then until drawn."""
    dicomweb = [r for r in load.requests if r["dicomweb"]]
    frames = [r for r in dicomweb if "/frames/" in r["url"]]
    if not frames:
        return (0.0, 0.0, 0.0, 0.0)
    frame = min(frames, key=lambda r: r["start"])
    answered = max((r["end"] for r in dicomweb if r["end"] <= frame["start"]),
                   default=load.first)
    drawn = load.first + load.seconds * 1000
    return (answered - load.first, frame["start"] - answered, frame["end"] - frame["start"],
            drawn - frame["end"])


def waterfall(load: Load) -> str:
    lines = []
    for r in sorted(load.requests, key=lambda r: r["start"]):
        if not r["dicomweb"]:  # an OHIF file loaded meanwhile (a chunk, a worker, a codec)
            path = "(file) " + r["url"].rsplit("/", 1)[-1][:60]
        else:
            path = r["url"].split("/dicom", 1)[1].split("/", 1)[1]
            path = path.split("?")[0] + ("?" + r["url"].split("?")[1][-40:]
                                         if "?" in r["url"] else "")
        for uid_part in path.split("/"):
            if len(uid_part) > 20:
                path = path.replace(uid_part, uid_part[-6:])
        lines.append(f"  {r['start'] - load.first:7.0f} {r['firstByte'] - r['start']:6.1f} "
                     f"{r['end'] - load.first:7.0f}  {path[:100]}")
    return ("  start ms  ttfb ms  end ms  request (from the first DICOMweb request)\n"
            + "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--slices", type=int, default=150)
    parser.add_argument("--postgres-url", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--waterfall", action="store_true")
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()
    from django.conf import settings
    from playwright.sync_api import sync_playwright

    from viewer import ohif

    dist = Path(settings.OHIF_DIST)
    if not ohif.installed(dist):
        raise SystemExit("OHIF is not installed: run bin/setup")
    with tempfile.TemporaryDirectory(prefix="bench-ohif-image-") as tmp:
        scratch = Path(tmp)
        log(f"writing the studies ({args.slices}+30 and {max(args.slices - 30, 30)}+30 slices)")
        data = make_data(scratch / "studies", args.slices)
        portal = Portal(scratch, args.postgres_url)
        orthanc = OrthancSite(scratch, dist.resolve())
        sites: dict[str, Portal | OrthancSite] = {"portal": portal, "Orthanc": orthanc}
        queries = {"current": (ohif.study_query(data.current), [data.current]),
                   "prior": (ohif.study_query(data.prior), [data.prior]),
                   "compare": (ohif.study_query(data.current, data.prior),
                               [data.current, data.prior])}
        results: dict[tuple[str, str], list[Load]] = {}
        try:
            log("loading the portal (PostgreSQL)")
            portal.load(data)
            log("loading Orthanc")
            orthanc.load(data)
            with portal.serving(), orthanc.serving(), sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                for name, site in sites.items():
                    log(f"warm-up load, {name}")
                    measure(browser, site, *queries["compare"])
                for round_number in range(args.rounds):
                    order = list(sites) if round_number % 2 == 0 else list(sites)[::-1]
                    for case in CASES:
                        for name in order:
                            load = measure(browser, sites[name], *queries[case])
                            results.setdefault((name, case), []).append(load)
                    log(f"round {round_number + 1}: " + ", ".join(
                        f"{n} {c} {results[(n, c)][-1].seconds:.2f}"
                        for c in CASES for n in sites))
                browser.close()
        finally:
            portal.drop()
            orthanc.drop()

    print(f"\nOHIF's first image, s from its first DICOMweb request; {args.rounds} rounds, "
          f"new browser context each load; {data.files} instances, {data.bytes / 1e6:.0f} MB; "
          f"portal on PostgreSQL, audit on; load average {os.getloadavg()[0]:.2f}")
    print(f"{'case':32} | {'portal':18} | {'Orthanc':18} | portal/Orthanc")
    labels = {"current": "current study, first image", "prior": "year-old prior alone",
              "compare": "side by side, both drawn"}
    for case in CASES:
        cells = []
        for name in sites:
            seconds = [load.seconds for load in results[(name, case)]]
            cells.append((statistics.median(seconds), min(seconds), max(seconds)))
        print(f"{labels[case]:32} | " + " | ".join(
            f"{m:.2f} [{lo:.2f}-{hi:.2f}]".ljust(18) for m, lo, hi in cells)
            + f" | {cells[0][0] / cells[1][0]:.2f}x")
    print(f"\nWhere the time went, ms, median of the rounds: {', '.join(PHASES)}")
    for case in CASES:
        for name in sites:
            split = [phases(load) for load in results[(name, case)]]
            print(f"{labels[case]:32} | {name:8} | " + " | ".join(
                f"{statistics.median(p[i] for p in split):6.0f}" for i in range(len(PHASES))))
    if args.waterfall:
        for case in CASES:
            for name in sites:
                print(f"\n{name}, {case} (last round):")
                print(waterfall(results[(name, case)][-1]))
    print(json.dumps({f"{n}/{c}": [round(x.seconds, 3) for x in loads]
                      for (n, c), loads in results.items()}))


if __name__ == "__main__":
    main()
