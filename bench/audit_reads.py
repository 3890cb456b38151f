"""What auditing a frame read costs: per-frame chained entries against viewing sessions.

    .venv/bin/python bench/audit_reads.py [--frames 400] [--size 256] [--rounds 3]
                                          [--postgres postgres://postgres@127.0.0.1:5432/x]

One synthetic CT series of ``--frames`` slices is stored in a fresh ``DATA_DIR`` (SQLite, or
a fresh database created on the PostgreSQL server of ``--postgres`` and dropped after), then
every frame is fetched once per mode, one after another, as OHIF loads a series:
``GET .../frames/1`` with OHIF's Accept, a bearer token of an admin, through Django's test
client in this process (the full middleware and view stack, no sockets). Modes, taking
turns for ``--rounds`` rounds:

* ``chained``: ``AUDIT_READ_SESSION_SECONDS=0``, every frame is its own chained entry (the
  chain head locked, an entry and the head written, as before viewing sessions);
* ``sessions``: the default window, a frame is one UPDATE on the caller's viewing session;
* ``no audit``: the audit write replaced by a no-op (the floor; no production switch).

Prints ms per frame, p50 [p95] over all rounds, and the chained entries each mode wrote.
With ``--parallel N`` each mode also fetches the series from N threads at once (as OHIF
does, with several requests in flight) and prints the wall time per frame: there every
chained entry waits for the one chain lock, a session UPDATE only for its own row.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def _fresh_postgres(url: str) -> tuple[str, Callable[[], None]]:
    """A new empty database beside the one ``url`` names, and how to drop it."""
    import psycopg

    parts = urlsplit(url)
    name = f"bench_audit_reads_{uuid.uuid4().hex[:8]}"
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return urlunsplit(parts._replace(path=f"/{name}")), drop


@contextmanager
def _no_audit() -> Iterator[None]:
    from imaging import access

    def nothing(*args: Any, **kwargs: Any) -> list[Any]:
        return []

    saved = access.record, access.read_sessions.record_read
    access.record, access.read_sessions.record_read = nothing, nothing  # type: ignore[assignment]
    try:
        yield
    finally:
        access.record, access.read_sessions.record_read = saved  # type: ignore[assignment]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--size", type=int, default=256, help="rows and columns of a slice")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", default="", help="a PostgreSQL URL (its server is used)")
    parser.add_argument("--parallel", type=int, default=0,
                        help="also fetch with this many threads at once")
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp(prefix="bench-audit-reads-"))
    for name in ("DATABASE_URL", "DICOM_STORAGE_DIR", "S3_BUCKET", "CELERY_BROKER_URL",
                 "REDIS_URL", "DEBUG"):
        os.environ.pop(name, None)
    os.environ.update(DATA_DIR=str(data), DJANGO_SETTINGS_MODULE="portal.settings",
                      ALLOWED_HOSTS="testserver")
    drop: Callable[[], None] = lambda: None  # noqa: E731
    if args.postgres:
        os.environ["DATABASE_URL"], drop = _fresh_postgres(args.postgres)

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.test import Client
    from django.test.utils import override_settings

    from accounts.models import ApiToken, Role, User
    from audit.models import AuditEvent
    from imaging.ingest import ingest
    from imaging.models import Instance
    from imaging.synthetic import PatientSpec, SeriesSpec, write_study

    try:
        call_command("migrate", verbosity=0)
        _uid, paths = write_study(
            data / "study", PatientSpec("BENCH-READS", "Bench^Reads", datetime.date(1970, 1, 2),
                                        "F"),
            [SeriesSpec("CT", args.frames, size=args.size)],
            study_date=datetime.date(2026, 1, 2), accession="BENCH-READS", description="bench")
        for path in paths:
            with path.open("rb") as fp:
                assert ingest(fp, source="bench").accepted
        admin = User.objects.create_user("bench", role=Role.ADMIN, is_staff=True,
                                         is_superuser=True)
        _token, secret = ApiToken.issue(admin, "bench")
        urls = [
            f"/dicomweb/studies/{i.series.study.study_instance_uid}/series/"
            f"{i.series.series_instance_uid}/instances/{i.sop_instance_uid}/frames/1"
            for i in Instance.objects.select_related("series__study").order_by(
                "instance_number")
        ]
        client = Client(HTTP_AUTHORIZATION=f"Bearer {secret}", HTTP_ACCEPT=FRAME_ACCEPT)

        def read_all() -> list[float]:
            times = []
            for url in urls:
                start = time.perf_counter()
                response = client.get(url)
                b"".join(response.streaming_content)
                times.append((time.perf_counter() - start) * 1000)
                assert response.status_code == 200, response.status_code
            return times

        modes: dict[str, Callable[[], Any]] = {
            "chained (every frame an entry)": lambda: override_settings(
                AUDIT_READ_SESSION_SECONDS=0),
            f"sessions ({settings.AUDIT_READ_SESSION_SECONDS} s window)": lambda: (
                override_settings()),
            "no audit (floor)": _no_audit,
        }
        read_all()  # warm up: file cache, connection, imports
        results: dict[str, list[float]] = {name: [] for name in modes}
        entries: dict[str, int] = dict.fromkeys(modes, 0)
        for _round in range(args.rounds):
            for name, mode in modes.items():
                before = AuditEvent.objects.count()
                with mode():
                    results[name] += read_all()
                entries[name] += AuditEvent.objects.count() - before
        wall: dict[str, list[float]] = {name: [] for name in modes}
        if args.parallel:
            from concurrent.futures import ThreadPoolExecutor

            from django.db import connection

            def fetch(part: list[str]) -> None:
                own = Client(HTTP_AUTHORIZATION=f"Bearer {secret}", HTTP_ACCEPT=FRAME_ACCEPT)
                try:
                    for url in part:
                        response = own.get(url)
                        b"".join(response.streaming_content)
                        assert response.status_code == 200, response.status_code
                finally:
                    connection.close()

            parts = [urls[i::args.parallel] for i in range(args.parallel)]
            for _round in range(args.rounds):
                for name, mode in modes.items():
                    with mode(), ThreadPoolExecutor(args.parallel) as pool:
                        start = time.perf_counter()
                        list(pool.map(fetch, parts))
                        wall[name].append((time.perf_counter() - start) * 1000 / len(urls))
        vendor = "PostgreSQL" if args.postgres else "SQLite"
        print(f"{len(urls)} frames ({args.size}x{args.size}) x {args.rounds} rounds, {vendor},"
              f" Django test client, load average {os.getloadavg()[0]:.1f}")
        print(f"{'mode':34} | {'ms per frame p50 [p95]':22} | chained entries per round")
        for name, times in results.items():
            p95 = statistics.quantiles(times, n=20)[-1]
            print(f"{name:34} | {statistics.median(times):6.2f} [{p95:6.2f}]        | "
                  f"{entries[name] / args.rounds:.0f}")
        if args.parallel:
            print(f"\n{args.parallel} threads at once, wall ms per frame, median of rounds")
            for name, per_frame in wall.items():
                print(f"{name:34} | {statistics.median(per_frame):6.2f}")
    finally:
        drop()


if __name__ == "__main__":
    main()
