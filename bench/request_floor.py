"""The per-request floor: one frame, one series' metadata and one study QIDO, end to end.

    .venv/bin/python bench/request_floor.py [--rounds 3] [--samples 40]
                                            [--postgres-url postgres://postgres@127.0.0.1:5432]

Data: one CT study of 2 series x 40 slices (512x512, 16-bit) and 120 small filler
instances of other patients, loaded into a fresh Orthanc (DICOMweb plugin) and a fresh
portal on a fresh PostgreSQL database, audit on.

Two callers of the portal: ``token`` (an admin's bearer ApiToken, as bench/dicomweb.py
calls it) and ``session`` (a doctor with an AccessGrant to the patient and a TOTP-verified
session cookie, as OHIF in the browser calls it: session, second factor, grant query).

1. **Latency, same run.** The portal under gunicorn as ``bin/portal`` starts it
   (``--preload --workers 2 --threads 4``, DEBUG off) and Orthanc take turns for
   ``--rounds`` rounds; each round is ``--samples`` sequential requests of each kind on
   one keep-alive session after warm-ups. p50 of all rounds' samples.
2. **Where it goes, in-process.** The WSGI stack in this process (Django's test client,
   every middleware, no sockets) on the same database: SQL statements and commits per
   request, each attributed to the innermost project layer that issued it (session,
   second factor, token lookup, policy, object lookup, audit), with the time spent
   waiting on the database for each; then cProfile's top functions of the frame request.

Round trips are statements plus commits: with psycopg a transaction's BEGIN travels with
its first statement, its COMMIT is one more trip (and the fsync of a write).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

import by_path  # noqa: E402
from orthanc import OrthancServer, free_port, stop_process  # noqa: E402

from imaging.synthetic import SeriesSpec, write_study  # noqa: E402

# bench/dicomweb.py by its path: as ``dicomweb`` it would hide the portal's own package.
_dw = by_path.load("dicomweb")
FRAME_ACCEPT, PATIENT, Portal = _dw.FRAME_ACCEPT, _dw.PATIENT, _dw.Portal
load_orthanc, write_filler = _dw.load_orthanc, _dw.write_filler

KINDS = ("frame", "series metadata", "study QIDO")
ACCEPT = {"frame": FRAME_ACCEPT, "series metadata": "application/dicom+json",
          "study QIDO": "application/dicom+json"}
GUNICORN = str(Path(sys.executable).parent / "gunicorn")

DOCTOR_SCRIPT = """
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice
from accounts.models import AccessGrant, Clinic, Role, User
from imaging.models import Patient
clinic = Clinic.objects.get_or_create(name="Clinica Floor")[0]
patient = Patient.objects.get(patient_id=%r)
patient.clinic = clinic
patient.save()
doctor = User.objects.create_user("doctor", password="x" * 20, role=Role.DOCTOR)
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


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def paths(root: str, study: str, series: str, sop: str) -> dict[str, str]:
    return {
        "frame": f"{root}/studies/{study}/series/{series}/instances/{sop}/frames/1",
        "series metadata": f"{root}/studies/{study}/series/{series}/metadata",
        "study QIDO": f"{root}/studies?PatientID={PATIENT.patient_id}",
    }


def uids(session: requests.Session, root: str, study: str) -> tuple[str, str]:
    series = session.get(f"{root}/studies/{study}/series", timeout=60).json()
    series_uid = sorted(series, key=lambda s: s["00200011"]["Value"][0])[0]["0020000E"][
        "Value"][0]
    instances = session.get(f"{root}/studies/{study}/series/{series_uid}/instances",
                            timeout=60).json()
    instances.sort(key=lambda i: i["00200013"]["Value"][0])
    return series_uid, instances[len(instances) // 2]["00080018"]["Value"][0]


def sample(session: requests.Session, urls: dict[str, str], samples: int,
           out: dict[str, list[float]]) -> None:
    for kind in KINDS:
        url, headers = urls[kind], {"Accept": ACCEPT[kind]}
        for _ in range(3):
            session.get(url, headers=headers, timeout=60).raise_for_status()
        for _ in range(samples):
            start = time.perf_counter()
            r = session.get(url, headers=headers, timeout=60)
            elapsed = time.perf_counter() - start
            r.raise_for_status()
            out.setdefault(kind, []).append(elapsed * 1000)


@contextmanager
def gunicorn(portal: Portal) -> Iterator[str]:
    """The portal as bin/portal serves it."""
    port = free_port()
    with open(portal.log_path, "ab") as out:
        process = subprocess.Popen(
            [GUNICORN, "portal.wsgi", "--preload", "--workers", "2", "--threads", "4",
             "--bind", f"127.0.0.1:{port}", "--log-level", "warning"],
            env=portal.env(), stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    root = f"http://127.0.0.1:{port}/dicomweb"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{root}/studies?limit=1", timeout=30, headers={
                        "Authorization": f"Bearer {portal.token}"}).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start: see {portal.log_path}")
            time.sleep(0.2)
        yield root
    finally:
        stop_process(process)


# --- In-process profile (run in a child with the portal's environment) ------------------

STAGES = [  # (path fragment of the innermost project frame, stage)
    ("audit/read_sessions.py", "audit: viewing session"),
    ("audit/trail.py", "audit: chained entry"),
    ("imaging/policies.py", "policy"),
    ("imaging/principals.py", "policy"),
    ("dicomweb/auth.py", "token lookup"),
    ("accounts/verified_device.py", "user + second factor"),
    ("django_otp/", "second factor (device)"),
    ("accounts/middleware.py", "second factor (required?)"),
    ("accounts/second_factor.py", "second factor (required?)"),
    ("patients/", "code-session check"),
    ("django/contrib/sessions/", "session"),
    ("django/contrib/auth/", "user"),
    ("axes/", "axes"),
    ("auditlog/", "auditlog"),
    ("imaging/access.py", "object lookup"),
    ("django/db/backends/base/base.py", "connection health check"),
    ("dicomweb/", "view"),
]


def _stage() -> str:
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        for fragment, stage in STAGES:
            if fragment in name and "request_floor" not in name:
                return stage
        frame = frame.f_back  # type: ignore[assignment]
    return "other"


def profile_inprocess(spec: dict[str, Any]) -> dict[str, Any]:
    import cProfile
    import io
    import pstats

    import django

    # bench/ (this script's folder) holds a dicomweb.py that would hide the portal's package.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    django.setup()
    from django.db import connection
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.test import Client

    stats: dict[str, dict[str, list[float]]] = {}
    current: list[dict[str, list[float]]] = []

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        stage = _stage()
        start = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            if current:
                current[0].setdefault(stage, []).append(time.perf_counter() - start)

    original_commit = BaseDatabaseWrapper._commit

    def counting_commit(self: Any) -> Any:
        start = time.perf_counter()
        try:
            return original_commit(self)
        finally:
            if current:
                current[0].setdefault("commit", []).append(time.perf_counter() - start)

    BaseDatabaseWrapper._commit = counting_commit  # type: ignore[method-assign]
    result: dict[str, Any] = {}
    for caller in ("token", "session"):
        client = Client()
        headers: dict[str, str] = {}
        if caller == "token":
            headers["HTTP_AUTHORIZATION"] = f"Bearer {spec['token']}"
        else:
            client.cookies["sessionid"] = spec["session"]
        for kind in KINDS:
            url = spec["urls"][kind]

            def get(url: str = url, kind: str = kind, client: Client = client,
                    headers: dict[str, str] = headers) -> None:
                r = client.get(url, HTTP_ACCEPT=ACCEPT[kind], **headers)
                assert r.status_code == 200, (url, r.status_code)
                if r.streaming:
                    for _ in r.streaming_content:  # type: ignore[attr-defined]
                        pass
                r.close()

            for _ in range(3):
                get()
            times = []
            for _ in range(spec["samples"]):
                start = time.perf_counter()
                get()
                times.append((time.perf_counter() - start) * 1000)
            per: dict[str, list[float]] = {}
            with connection.execute_wrapper(wrapper):
                for _ in range(spec["samples"]):
                    current[:] = [per]
                    get()
                    current.clear()
            n = spec["samples"]
            stats[f"{caller} {kind}"] = per
            result[f"{caller} {kind}"] = {
                "ms": statistics.median(times),
                "stages": {s: (len(v) / n, sum(v) * 1000 / n) for s, v in per.items()},
            }
            if kind == "frame" or caller == "session":
                profiler = cProfile.Profile()
                profiler.enable()
                for _ in range(spec["samples"]):
                    get()
                profiler.disable()
                text = io.StringIO()
                pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(28)
                result[f"{caller} {kind}"]["profile"] = text.getvalue()
    BaseDatabaseWrapper._commit = original_commit  # type: ignore[method-assign]
    return result


# --- Report ------------------------------------------------------------------------------


def print_report(latency: dict[str, dict[str, list[float]]], inproc: dict[str, Any],
                 show_profiles: bool) -> None:
    def p50(values: list[float]) -> str:
        return f"{statistics.median(values):.2f}"

    print("\nPer request, p50 ms over all rounds (gunicorn as bin/portal starts it, "
          "PostgreSQL, audit on):\n")
    header = (f"{'request':<17} | {'Orthanc':>8} | {'portal token':>12} | "
              f"{'portal session':>14} | {'token - Orthanc':>15} | {'session - Orthanc':>17}")
    print(header)
    print("-" * len(header))
    for kind in KINDS:
        o = statistics.median(latency["Orthanc"][kind])
        t = statistics.median(latency["portal token"][kind])
        s = statistics.median(latency["portal session"][kind])
        print(f"{kind:<17} | {o:>8.2f} | {t:>12.2f} | {s:>14.2f} | {t - o:>+15.2f} | "
              f"{s - o:>+17.2f}")

    print("\nIn-process (test client, no sockets): SQL per request, by the layer that sent "
          "it; count and ms waiting on the database\n")
    for name, row in inproc.items():
        stages = row["stages"]
        statements = sum(c for s, (c, _) in stages.items() if s != "commit")
        commits = stages.get("commit", (0, 0))[0]
        db_ms = sum(ms for _, ms in stages.values())
        print(f"{name}: {row['ms']:.2f} ms, {statements:.1f} statements + {commits:.1f} "
              f"commits = {statements + commits:.1f} round trips, {db_ms:.2f} ms in the "
              f"database")
        for stage, (count, ms) in sorted(stages.items(), key=lambda kv: -kv[1][1]):
            print(f"    {stage:<28} {count:>4.1f} x  {ms:6.2f} ms")
    if show_profiles:
        for name, row in inproc.items():
            if "profile" in row:
                print(f"\n--- cProfile, {name} ---")
                print("\n".join(row["profile"].splitlines()[:45]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--postgres-url", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--cache-url", default="",
                        help="give the portal CACHE_URL (Redis: sessions from the cache); default "
                             "none, as bin/portal runs")
    parser.add_argument("--profiles", action="store_true", help="print cProfile listings")
    parser.add_argument("--inprocess", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inprocess:
        print(json.dumps(profile_inprocess(json.loads(args.inprocess))))
        return

    scratch = Path(tempfile.mkdtemp(prefix="bench-floor-"))
    portal = Portal(scratch, args.postgres_url)
    portal.database = f"bench_floor_{os.getpid()}"
    if args.cache_url:
        plain_env = portal.env
        portal.env = lambda: {**plain_env(), "CACHE_URL": args.cache_url}  # type: ignore[method-assign]
    log_load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    try:
        study_uid, files = write_study(
            scratch / "data" / "study", PATIENT,
            [SeriesSpec("CT", 40, description="Axial"), SeriesSpec("CT", 40, description="Bone")],
            study_date=datetime.date.today(), accession="FLOOR-1", description="CT torax",
            seed=1)
        write_filler(scratch / "data" / "filler", 120)
        portal.setup()
        portal.import_folder(scratch / "data")
        session_key = portal.manage("shell", "-c", DOCTOR_SCRIPT % PATIENT.patient_id
                                    ).strip().splitlines()[-1]
        portal.vacuum()
        all_files = sorted((scratch / "data").rglob("*.dcm"))
        latency: dict[str, dict[str, list[float]]] = {}
        with OrthancServer() as orthanc:
            load_orthanc(orthanc, all_files)
            oroot = orthanc.dicomweb_url.rstrip("/")
            with requests.Session() as s:
                ourls = paths(oroot, study_uid, *uids(s, oroot, study_uid))
            with gunicorn(portal) as root:
                with requests.Session() as s:
                    s.headers["Authorization"] = f"Bearer {portal.token}"
                    series_uid, sop = uids(s, root, study_uid)
                purls = paths(root, study_uid, series_uid, sop)
                for rnd in range(args.rounds):
                    log(f"round {rnd + 1}/{args.rounds}")
                    with requests.Session() as s:
                        sample(s, ourls, args.samples, latency.setdefault("Orthanc", {}))
                    with requests.Session() as s:
                        s.headers["Authorization"] = f"Bearer {portal.token}"
                        sample(s, purls, args.samples, latency.setdefault("portal token", {}))
                    with requests.Session() as s:
                        s.cookies.set("sessionid", session_key)
                        sample(s, purls, args.samples,
                               latency.setdefault("portal session", {}))
        spec = {"token": portal.token, "session": session_key, "samples": args.samples,
                "urls": {k: "/dicomweb" + v.split("/dicomweb", 1)[1]
                         for k, v in purls.items()}}
        env = portal.env()
        env["ALLOWED_HOSTS"] = "127.0.0.1,testserver"
        child = subprocess.run([sys.executable, __file__, "--inprocess", json.dumps(spec)],
                               cwd=REPO, env=env, capture_output=True, text=True)
        if child.returncode != 0:
            raise RuntimeError(child.stderr[-4000:])
        inproc = json.loads(child.stdout.strip().splitlines()[-1])
    finally:
        portal.drop()
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\nCACHE_URL={args.cache_url or '(none)'}; "
          f"{len(files)} study instances + 120 filler; {args.rounds} rounds x "
          f"{args.samples} samples; {os.cpu_count()} CPUs; load average before {log_load}, "
          f"after {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print_report(latency, inproc, args.profiles)


if __name__ == "__main__":
    main()
