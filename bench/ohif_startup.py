"""OHIF's start-up: from the viewer page's request to OHIF's first DICOMweb request.

    .venv/bin/python bench/ohif_startup.py [--rounds 5] [--mbit 0]

A fresh ``DATA_DIR`` (SQLite) with one small synthetic CT study and a signed-in admin
session; the portal under gunicorn as ``bin/portal`` runs it (2 workers, 4 threads) on a
free loopback port; headless Chromium (``/usr/bin/chromium``) opens
``/viewer/viewer?StudyInstanceUIDs=<uid>``. The time is from ``page.goto`` to the first
request whose URL has ``/dicomweb/`` (OHIF has loaded, parsed and run its bundles and
asked for the study), and the bytes are what crossed the wire until then.

Two ways of sending OHIF's files, taking turns for ``--rounds`` rounds:

* ``identity``: Chromium sends ``Accept-Encoding: identity``, so the portal answers every
  file as is: what the portal sent before the gzip copies (the cache headers were the
  same then);
* ``gzip``: Chromium's own ``Accept-Encoding``; the portal sends the gzip copies
  bin/fetch-ohif wrote.

``cold`` is a new browser context (empty cache); ``warm`` the same page loaded again in
that context (hashed bundles from the cache, index.html and app-config.js revalidated).
``--mbit N`` throttles Chromium's network to N Mbit/s down and up with 5 ms latency (a
hospital network rather than loopback; 0, the default, leaves loopback as it is).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from orthanc import free_port, stop_process  # noqa: E402

CHROMIUM = "/usr/bin/chromium"


def _prepare(data_dir: Path) -> tuple[str, str]:
    """Migrate, store one study and sign an admin in: (study UID, session cookie value)."""
    os.environ["DATA_DIR"] = str(data_dir)
    os.environ["DEBUG"] = "1"
    # The session is made here with force_login; a TOTP step is not what is measured.
    os.environ["REQUIRE_2FA"] = "0"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client

    from accounts.models import Role, User
    from imaging.ingest import ingest
    from imaging.synthetic import PatientSpec, SeriesSpec, write_study

    call_command("migrate", verbosity=0, interactive=False)
    user = User.objects.create_user("bench", password=None, role=Role.ADMIN,
                                    is_staff=True, is_superuser=True)
    patient = PatientSpec("BENCH-001", "Bench^Paula", datetime.date(1975, 4, 12), "F")
    uid, paths = write_study(data_dir / "study", patient, [SeriesSpec("CT", 4, size=256)],
                             study_date=datetime.date(2026, 3, 2), accession="BENCH-1",
                             description="CT bench")
    for path in paths:
        with path.open("rb") as fp:
            assert ingest(fp, source="bench:ohif").accepted
    client = Client()
    client.force_login(user)
    return uid, client.cookies["sessionid"].value


def _server(port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [str(REPO / ".venv/bin/gunicorn"), "portal.wsgi", "--preload", "--bind",
         f"127.0.0.1:{port}", "--workers", "2", "--threads", "4"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import urllib.request

    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/login/", timeout=1)
            return process
        except OSError:
            time.sleep(0.1)
    stop_process(process)
    raise SystemExit("the portal did not start")


class Load:
    """One navigation, read from the page's own Resource Timing: seconds from navigation
    start to OHIF's first DICOMweb request, and the bytes that crossed the wire before it
    (``transferSize``: 0 for a file from the cache, headers included otherwise)."""

    SCRIPT = """() => {
        const entries = performance.getEntriesByType('resource');
        const first = entries.find(e => e.name.includes('/dicomweb/'));
        if (!first) return null;
        const before = entries.filter(e => e.startTime < first.startTime);
        return {start: first.startTime / 1000,
                transferred: before.reduce((n, e) => n + e.transferSize, 0),
                decoded: before.reduce((n, e) => n + e.decodedBodySize, 0),
                cached: before.filter(e => e.transferSize === 0).length,
                files: before.length};
    }"""

    def __init__(self, page: Any, url: str) -> None:
        started = time.monotonic()
        page.goto(url)
        while (found := page.evaluate(self.SCRIPT)) is None:
            assert time.monotonic() - started < 120, "no DICOMweb request in 120 s"
            page.wait_for_timeout(20)
        self.seconds = float(found["start"])
        self.transferred = int(found["transferred"])
        self.decoded = int(found["decoded"])
        self.cached = int(found["cached"])
        self.files = int(found["files"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mbit", type=float, default=0.0)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="bench-ohif-") as tmp:
        data_dir = Path(tmp)
        uid, session = _prepare(data_dir)
        from django.conf import settings

        from viewer import ohif

        if not ohif.installed(Path(settings.OHIF_DIST)):
            raise SystemExit("OHIF is not installed: run bin/setup")
        port = free_port()
        env = {k: v for k, v in os.environ.items()
               if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "S3_BUCKET")}
        env.update(DATA_DIR=str(data_dir), DEBUG="1", TASKS_IN_PROCESS="1", REQUIRE_2FA="0")
        server = _server(port, env)
        base = f"http://127.0.0.1:{port}"
        url = f"{base}/viewer/viewer?StudyInstanceUIDs={uid}"
        results: dict[tuple[str, str], list[Load]] = {}
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM)
                for _ in range(args.rounds):
                    for mode in ("identity", "gzip"):
                        headers = {"Accept-Encoding": "identity"} if mode == "identity" else {}
                        context = browser.new_context(extra_http_headers=headers,
                                                      viewport={"width": 1280, "height": 900})
                        context.add_cookies([{"name": "sessionid", "value": session,
                                              "url": base}])
                        # Room for every file OHIF loads (the default keeps 250 entries).
                        context.add_init_script(
                            "performance.setResourceTimingBufferSize(5000)")
                        page = context.new_page()
                        if args.mbit:
                            cdp = context.new_cdp_session(page)
                            rate = args.mbit * 1e6 / 8
                            cdp.send("Network.enable")
                            cdp.send("Network.emulateNetworkConditions", {
                                "offline": False, "latency": 5,
                                "downloadThroughput": rate, "uploadThroughput": rate})
                        for state in ("cold", "warm"):
                            results.setdefault((mode, state), []).append(Load(page, url))
                            page.wait_for_timeout(1500)  # let OHIF settle before reloading
                        context.close()
                browser.close()
        finally:
            stop_process(server)

    print(f"OHIF start-up to its first DICOMweb request, {args.rounds} rounds, "
          f"network {'loopback' if not args.mbit else f'{args.mbit:g} Mbit/s, 5 ms'}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'encoding':9} {'cache':5} {'median s':>9} {'min s':>7} {'max s':>7} "
          f"{'MB on wire':>11} {'MB decoded':>11} {'from cache':>11}")
    for (mode, state), loads in results.items():
        seconds = [load.seconds for load in loads]
        wire = statistics.median(load.transferred for load in loads) / 1e6
        decoded = statistics.median(load.decoded for load in loads) / 1e6
        cached = f"{statistics.median(load.cached for load in loads):.0f}/" \
                 f"{statistics.median(load.files for load in loads):.0f}"
        print(f"{mode:9} {state:5} {statistics.median(seconds):9.2f} {min(seconds):7.2f} "
              f"{max(seconds):7.2f} {wire:11.2f} {decoded:11.2f} {cached:>11}")


if __name__ == "__main__":
    main()
