"""A CT series over a slow link, portal beside Orthanc: the viewer's first image, the whole
series, the bytes on the wire and the patient's PDI ZIP.

    sudo .venv/bin/python bench/slow_link.py [--slices 40] [--rates 10,2]

The link is emulated with network namespaces: the servers in one (``psl-server``), the
client in another (``psl-client``), joined by a point-to-point link with netem's model in
both directions (20 ms each way, so a 40 ms round trip, and the rate: 10 Mbit/s, then
2 Mbit/s; a queue that never drops). This machine's kernel has no ``sch_netem``, so the
link is a TUN device in each namespace with a carrier process per direction moving the
packets between them, each delayed as netem would (``bench/shaped_link.py``); the packets
and TCP are the kernels' own. Both servers sit behind the same nginx in the server
namespace (one listener each, keep-alive to the upstream, no buffering), so they cross
the same link in the same way. Root only; the namespaces are removed on exit (also after
an error or Ctrl-C), and any left by a killed run are removed at start.
deploy/cluster/network.py makes the cluster harness's namespaces the same way, with its own
prefix (``pcl-``); bench/replica.py ``--link`` uses ``prl-``: none removes the others'.

Data: one patient, one CT study of one axial series (``--slices`` slices, 512x512, 16-bit,
``imaging.synthetic``), stored uncompressed in both servers.

* ``portal``: gunicorn as bin/portal starts it (``--preload``, 2 workers, 4 threads), the
  embedded SQLite, DEBUG off, audit on, a doctor's TOTP-verified session. Frames for
  ``transfer-syntax=*`` come as JPEG-LS (``WADO_FRAMES_ANY_SYNTAX``, the default, the
  client counted as a remote site: ``WADO_FRAMES_LAN_NETWORKS=none``). Run
  twice: ``cold`` (empty frame cache: every frame encoded as it is asked) and ``warm``
  (the cache of the first run: what a second viewer gets).
* ``Orthanc``: Orthanc with its DICOMweb plugin (bench/orthanc.py, its defaults), loaded
  by ``POST /instances``.

Before each link speed both servers are asked for the series once over a fast link, not
timed (the portal for native frames, so its frame cache stays empty for ``cold``).

What is timed, from the client namespace, as OHIF asks (the series' ``/metadata``, then
each instance's ``/frames/1`` with ``Accept: multipart/related;
type=application/octet-stream; transfer-syntax=*``, six at a time over keep-alive
connections as a browser does over HTTP/1.1, the first instance first):

* ``first image``: from the metadata request to the first frame received;
* ``series``: to the last frame received;
* ``wire``: bytes received on the client's interface for the series (IP and TCP included);
* ``PDI ZIP``: the patient's download link (sharing) against Orthanc's
  ``/studies/{id}/media`` (its DICOMDIR ZIP), each read to its end.

Also printed: the cost of encoding one 512x512 16-bit CT frame as JPEG-LS and RLE in this
process (median of 20), and the frames' compression ratio.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

from ohif_first_image import SESSION_SCRIPT, wait_http  # noqa: E402
from orthanc import OrthancServer, free_port, stop_process  # noqa: E402
from shaped_link import Link, inside, interface_bytes, remove_namespaces  # noqa: E402

from imaging.synthetic import PatientSpec, SeriesSpec, write_study  # noqa: E402

PREFIX = "psl-"
SERVER, CLIENT = f"{PREFIX}server", f"{PREFIX}client"
SERVER_IP, CLIENT_IP = "10.233.0.1", "10.233.0.2"
PORTAL_PORT, ORTHANC_PORT = 8000, 8042
ONE_WAY_DELAY_MS = 20
PARALLEL = 6  # a browser's connections per origin over HTTP/1.1
OHIF_FRAME_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"
NATIVE_FRAME_ACCEPT = "multipart/related; type=application/octet-stream"
TIMEOUT_S = 300
PATIENT = PatientSpec("BENCH-SLOW-1", "Lenta^Lia", datetime.date(1971, 5, 9), "F")
PYTHON = sys.executable
GUNICORN = str(Path(sys.executable).parent / "gunicorn")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PORTAL_ENV_DROP = ("DATABASE_URL", "DICOM_STORAGE_DIR", "S3_BUCKET", "CELERY_BROKER_URL",
                   "REDIS_URL", "CACHE_URL", "DEBUG", "REQUIRE_2FA")

LINK_SCRIPT = """
from accounts.models import Role, User
from audit.trail import Actor
from imaging.models import Patient, Study
from sharing import services
patient = Patient.objects.get(patient_id=%r)
user = User.objects.create_user("patient", password="x" * 20, role=Role.PATIENT,
                                first_name="Lia", last_name="Lenta")
patient.user = user
patient.save()
_, token = services.create_download_link(user, list(Study.objects.filter(patient=patient)),
                                         actor=Actor.for_user(user))
print(token)
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- Servers --------------------------------------------------------------------------------

NGINX_CONF = """
daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {root}/tmp-body;
  proxy_temp_path {root}/tmp-proxy;
  fastcgi_temp_path {root}/tmp-fastcgi;
  uwsgi_temp_path {root}/tmp-uwsgi;
  scgi_temp_path {root}/tmp-scgi;
  tcp_nodelay on;
  keepalive_requests 10000;
  upstream portal {{ server 127.0.0.1:{portal}; keepalive 16; }}
  upstream orthanc {{ server 127.0.0.1:{orthanc}; keepalive 16; }}
  server {{
    listen {address}:{portal_port};
    location / {{ proxy_pass http://portal; proxy_http_version 1.1;
      proxy_set_header Connection ""; proxy_set_header Host $http_host;
      proxy_buffering off; proxy_read_timeout 300s; }}
  }}
  server {{
    listen {address}:{orthanc_port};
    location / {{ proxy_pass http://orthanc; proxy_http_version 1.1;
      proxy_set_header Connection ""; proxy_set_header Host $http_host;
      proxy_buffering off; proxy_read_timeout 300s; }}
  }}
}}
"""


@dataclass
class Study:
    folder: Path
    study_uid: str
    series_uid: str
    instances: list[str]  # SOP Instance UIDs, in instance order
    bytes: int


def make_study(folder: Path, slices: int) -> Study:
    from pydicom import dcmread

    uid, paths = write_study(folder, PATIENT, [SeriesSpec("CT", slices,
                                                          description="Axial 1.25 mm")],
                             study_date=datetime.date(2025, 3, 2), accession="SLOW-1",
                             description="CT tórax (prior)", seed=11)
    headers = sorted((dcmread(p, stop_before_pixels=True) for p in paths),
                     key=lambda ds: int(ds.InstanceNumber))
    return Study(folder, uid, str(headers[0].SeriesInstanceUID),
                 [str(ds.SOPInstanceUID) for ds in headers],
                 sum(p.stat().st_size for p in paths))


class Portal:
    def __init__(self, scratch: Path) -> None:
        self.data_dir = scratch / "portal-data"
        self.data_dir.mkdir()
        self.log_path = scratch / "gunicorn.log"
        self.port = 0
        self.session = ""
        self.token = ""
        self.process: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in PORTAL_ENV_DROP}
        env.update(DATA_DIR=str(self.data_dir), DEBUG="0", LOG_LEVEL="WARNING",
                   ALLOWED_HOSTS=f"{SERVER_IP},127.0.0.1", PYTHONPATH=str(REPO),
                   TASKS_IN_PROCESS="1",
                   # The client's 10.233.0.2 is a remote site here, not the clinic's LAN.
                   WADO_FRAMES_LAN_NETWORKS="none")
        return env

    def manage(self, *args: str) -> str:
        result = subprocess.run([PYTHON, "manage.py", *args], cwd=REPO, env=self.env(),
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {args[0]} failed:\n{result.stderr[-3000:]}")
        return result.stdout

    def load(self, study: Study) -> None:
        self.manage("migrate", "-v0")
        self.manage("import_dicom", str(study.folder), "--no-progress", "--workers", "1")
        self.session = self.manage("shell", "-c", SESSION_SCRIPT % PATIENT.patient_id
                                   ).strip().splitlines()[-1]
        self.token = self.manage("shell", "-c", LINK_SCRIPT % PATIENT.patient_id
                                 ).strip().splitlines()[-1]

    def start(self) -> None:
        """In the current (server) namespace, on its loopback."""
        self.port = free_port()
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                [GUNICORN, "portal.wsgi", "--preload", "--bind", f"127.0.0.1:{self.port}",
                 "--workers", "2", "--threads", "4", "--log-level", "warning"],
                cwd=REPO, env=self.env(), stdout=out, stderr=subprocess.STDOUT)
        wait_http(f"http://127.0.0.1:{self.port}/accounts/login/", self.process,
                  self.log_path)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


def load_orthanc(orthanc: OrthancServer, study: Study) -> str:
    """Every file POSTed; the study's Orthanc ID."""
    import requests

    with requests.Session() as session:
        for path in sorted(study.folder.rglob("*.dcm")):
            session.post(f"{orthanc.url}/instances", data=path.read_bytes(),
                         timeout=120).raise_for_status()
        found = session.post(f"{orthanc.url}/tools/lookup", data=study.study_uid,
                             timeout=30).json()
    return str(next(item["ID"] for item in found if item["Type"] == "Study"))


# --- Measuring ------------------------------------------------------------------------------


@dataclass
class Run:
    first: float
    series: float
    wire: int
    body: int
    parts: set[str]


class Client:
    """HTTP/1.1 keep-alive connections to one server, one per thread, like a browser's."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port = port
        self.headers = headers
        self.local = threading.local()

    def get(self, path: str, accept: str) -> tuple[str, bytes]:
        conn = getattr(self.local, "conn", None)
        if conn is not None:
            try:
                conn.request("GET", path, headers={**self.headers, "Accept": accept})
                response = conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionError):
                conn.close()  # idle past nginx's keep-alive timeout: a new one, as browsers do
                conn = None
        if conn is None:
            conn = http.client.HTTPConnection(SERVER_IP, self.port, timeout=TIMEOUT_S)
            self.local.conn = conn
            conn.request("GET", path, headers={**self.headers, "Accept": accept})
            response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {data[:300]!r}")
        return response.getheader("Content-Type", ""), data


def part_types(content_type: str, body: bytes) -> set[str]:
    return {line.split(b":", 1)[1].strip().decode() for line in body.split(b"\r\n")
            if line.lower().startswith(b"content-type:")} or {content_type}


def view_series(client: Client, root: str, study: Study,
                accept: str = OHIF_FRAME_ACCEPT) -> Run:
    """OHIF's requests for one series: metadata, the first frame, then the rest six by six."""
    base = f"{root}/studies/{study.study_uid}/series/{study.series_uid}"
    before = interface_bytes(CLIENT)[0]
    start = time.perf_counter()
    _, metadata = client.get(f"{base}/metadata", "application/dicom+json")
    total = len(metadata)
    kinds: set[str] = set()

    def frame(sop: str) -> int:
        content_type, data = client.get(f"{base}/instances/{sop}/frames/1", accept)
        kinds.update(part_types(content_type, data))
        return len(data)

    total += frame(study.instances[0])
    first = time.perf_counter() - start
    with ThreadPoolExecutor(PARALLEL) as pool:
        total += sum(pool.map(frame, study.instances[1:]))
    series = time.perf_counter() - start
    return Run(first, series, interface_bytes(CLIENT)[0] - before, total, kinds)


def download(client: Client, path: str) -> tuple[float, int]:
    start = time.perf_counter()
    _, data = client.get(path, "*/*")
    if not data.startswith(b"PK"):
        raise RuntimeError(f"{path} is not a ZIP")
    return time.perf_counter() - start, len(data)


def encode_cost() -> list[tuple[str, float, float]]:
    """(syntax, median ms per 512x512 16-bit CT frame, compression ratio)."""
    from imaging.synthetic import phantom

    sys.path.insert(0, str(REPO))
    from dicomweb.frame_codecs import Layout, encode

    native = phantom(512, 20, 40, "CT").astype("<i2").tobytes()
    layout = Layout(512, 512, 1, 16, 16, 1, "MONOCHROME2", 0)
    out = []
    for name, uid in (("JPEG-LS", "1.2.840.10008.1.2.4.80"), ("RLE", "1.2.840.10008.1.2.5")):
        times, size = [], 0
        for _ in range(20 if name == "JPEG-LS" else 5):
            t = time.perf_counter()
            size = len(encode(native, layout, uid))
            times.append((time.perf_counter() - t) * 1000)
        out.append((name, statistics.median(times), len(native) / size))
    return out


# --- Main -----------------------------------------------------------------------------------


def mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=40)
    parser.add_argument("--rates", default="10,2", help="Mbit/s, comma separated")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/slow_link.py needs root (ip netns, tc)")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()
    scratch = Path(tempfile.mkdtemp(prefix="bench-slow-"))
    scratch.chmod(0o755)
    remove_namespaces(PREFIX)
    portal = Portal(scratch)
    orthanc = OrthancServer()
    nginx: subprocess.Popen[bytes] | None = None
    link: Link | None = None
    try:
        log(f"writing {args.slices} slices")
        study = make_study(scratch / "data", args.slices)
        log("loading the portal")
        portal.load(study)
        link = Link(PREFIX, SERVER_IP, CLIENT_IP, up_bps=10e6,
                    delay_s=ONE_WAY_DELAY_MS / 1000)
        with inside(SERVER):
            portal.start()
            orthanc.start()
            log("loading Orthanc")
            orthanc_id = load_orthanc(orthanc, study)
            nginx_root = scratch / "nginx"
            nginx_root.mkdir()
            nginx_root.chmod(0o755)
            conf = nginx_root / "nginx.conf"
            conf.write_text(NGINX_CONF.format(root=nginx_root, address=SERVER_IP,
                                              portal=portal.port, orthanc=orthanc.http_port,
                                              portal_port=PORTAL_PORT,
                                              orthanc_port=ORTHANC_PORT))
            nginx = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(nginx_root)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            time.sleep(0.5)
        cache = portal.data_dir / "frame-cache"
        costs = encode_cost()
        rows: list[str] = []
        with inside(CLIENT):
            for mbit in (int(r) for r in args.rates.split(",")):
                log(f"{mbit} Mbit/s, {2 * ONE_WAY_DELAY_MS} ms round trip")
                ours = Client(PORTAL_PORT, {"Cookie": f"sessionid={portal.session}"})
                theirs = Client(ORTHANC_PORT, {})
                # Once each, over a fast link and not timed: every gunicorn thread and
                # Orthanc have answered, both servers' files are in the OS cache. The portal's
                # pass asks for native frames, so its frame cache stays empty for "cold".
                link.set_rates(1e9)
                view_series(ours, "/dicomweb", study, NATIVE_FRAME_ACCEPT)
                view_series(theirs, "/dicom-web", study)
                shutil.rmtree(cache, ignore_errors=True)
                link.set_rates(mbit * 1e6)
                results: dict[str, Run] = {}
                for name, client, root in (("portal cold", ours, "/dicomweb"),
                                           ("portal warm", ours, "/dicomweb"),
                                           ("Orthanc", theirs, "/dicom-web")):
                    r = results[name] = view_series(client, root, study)
                    log(f"  {name}: first {r.first:.2f} s, series {r.series:.2f} s, "
                        f"{mb(r.wire)} on the wire; parts {sorted(r.parts)}")
                zip_ours = download(ours, f"/s/{portal.token}/download")
                zip_theirs = download(theirs, f"/studies/{orthanc_id}/media")
                o = results["Orthanc"]
                for name in ("portal cold", "portal warm", "Orthanc"):
                    r = results[name]
                    rows.append(f"| {mbit} Mbit/s | {name} | {r.first:.2f} s | {r.series:.1f} s"
                                f" ({r.series / o.series:.2f}x) | {mb(r.wire)} |")
                log(f"  PDI ZIP: portal {zip_ours[0]:.1f} s, Orthanc {zip_theirs[0]:.1f} s")
                rows.append(f"| {mbit} Mbit/s | PDI ZIP | portal {zip_ours[0]:.1f} s "
                            f"({mb(zip_ours[1])}) | Orthanc {zip_theirs[0]:.1f} s "
                            f"({mb(zip_theirs[1])}) | |")
        print(f"\nOne CT series, {args.slices} slices of 512x512 16-bit "
              f"({mb(study.bytes)} stored), over the emulated link with a "
              f"{2 * ONE_WAY_DELAY_MS} ms round trip; frames {PARALLEL} at a time.\n")
        print("| link | server | first image | whole series (vs Orthanc) | on the wire |")
        print("|---|---|---|---|---|")
        print("\n".join(rows))
        print()
        for name, ms, ratio in costs:
            print(f"encode one 512x512 16-bit CT frame as {name}: {ms:.1f} ms, "
                  f"ratio {ratio:.2f}:1")
    finally:
        if nginx is not None:
            stop_process(nginx)
        portal.stop()
        orthanc.stop()
        if link is not None:
            link.stop()
        remove_namespaces(PREFIX)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
