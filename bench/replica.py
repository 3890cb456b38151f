"""What the replica costs against the same S3 endpoint without it, in the same run.

    .venv/bin/python bench/replica.py [--small 200] [--large-mib 256] [--repeat 1]

Starts one moto server (tests/s3_support.py) and a throw-away portal (SQLite, local blobs
in a temp dir, tasks in-process), ingests ``--small`` CT slices (~0.53 MB each) and one
``--large-mib`` MiB object without a replica, then, against the same endpoint:

- plain boto3: ``upload_file`` of each file (no encryption), and the same followed by a
  download of the object hashed with SHA-256 (the work a verified copy also does);
- the portal: ``replica.replicate.replicate_copy`` of each copy (encrypt, upload, read
  back, decrypt, hash, rows updated), as a worker runs it;
- the same two again as a worker runs a dispatched batch, ``REPLICA_CONCURRENCY`` at once
  (``replicate_many``, batches of ``REPLICA_DISPATCH_BATCH``), against plain uploads with as
  many at once;
- the restore drill (``replica.drill.run``) over everything replicated: objects/s, MB/s;
- peak RSS (``VmHWM`` of a child process doing only that) of the plain upload, the
  portal's replication and the drill of the large object.

Apart from the "at once" rows, everything runs one object at a time in one process, for
both sides, so the ratio compares the code, not the parallelism; the "at once" rows give
both sides the same width. MB are 10^6 bytes.

Over an emulated internet link (root only)::

    .venv/bin/python bench/replica.py --link 20/100/20 --small 20 --large-mib 32

``--link UP/DOWN/DELAY``: the moto server in a network namespace of its own reached over
a link of UP Mbit/s from the portal to it, DOWN Mbit/s back and DELAY ms each way
(``bench/shaped_link.py``: namespaces ``prl-server`` and ``prl-client``, removed on exit,
on an error and at start), moto kept-alive as a cloud endpoint is (``MotoServer``'s
``keep_alive``). Printed side by side for ``--small`` CT slices and one multi-frame CT of
``--large-mib`` MiB (512x512 phantom frames, which pack as real CT does): plain boto3
upload, plain upload + read back, the portal's replication with packing off and on, one
at a time and ``REPLICA_CONCURRENCY`` at once, with the bytes each sent and received on
the link. The whole run is bounded by ``--time-limit`` seconds.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import datetime
import hashlib
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shaped_link import Link

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
LINK_PREFIX = "prl-"
SERVER_IP, CLIENT_IP = "10.234.0.1", "10.234.0.2"


def configure(work: Path, endpoint: str, bucket: str) -> None:
    """The environment of the throw-away portal (inherited by the child processes)."""
    for name in ("DATABASE_URL", "S3_BUCKET", "CELERY_BROKER_URL", "REDIS_URL", "CACHE_URL"):
        os.environ.pop(name, None)
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "portal.settings", "DATA_DIR": str(work / "data"),
        "DICOM_STORAGE_DIR": str(work / "data" / "dicom"), "TASKS_IN_PROCESS": "1",
        "LOG_LEVEL": "WARNING", "BENCH_REPLICA_URL": endpoint, "REPLICA_BUCKET": bucket,
        "REPLICA_REGION": "us-east-1", "REPLICA_ACCESS_KEY_ID": "testing",
        "REPLICA_SECRET_ACCESS_KEY": "testing", "REPLICA_PREFIX": "objects/",
        "REPLICA_KEYS": "bench:" + base64.b64encode(os.urandom(32)).decode(),
        "REPLICA_CURRENT_KEY": "bench", "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    })


def django_setup() -> None:
    import django

    django.setup()


def write_large(folder: Path, mib: int) -> Path:
    """One multi-frame CT object of about ``mib`` MiB, its pixel data written in chunks."""
    import pydicom
    from large_objects import write_multiframe

    from imaging.synthetic import PatientSpec, SeriesSpec, write_study

    _, (seed,) = write_study(folder / "seed", PatientSpec("BENCH-L", "Bench^Large",
                             datetime.date(1970, 1, 1), "O"), [SeriesSpec("CT", 1, size=64)],
                             study_date=datetime.date(2026, 1, 1), accession="BL",
                             description="large")
    ds = pydicom.dcmread(seed)
    ds.Rows = ds.Columns = 4096
    return write_multiframe(ds, folder / "large.dcm", max(1, (mib << 20) // (4096 * 4096 * 2)))


def plain_upload(client: object, bucket: str, paths: list[Path], read_back: bool) -> float:
    started = time.perf_counter()
    for path in paths:
        key = f"plain/{os.urandom(8).hex()}"
        client.upload_file(str(path), bucket, key)  # type: ignore[attr-defined]
        if read_back:
            body = client.get_object(Bucket=bucket, Key=key)["Body"]  # type: ignore[attr-defined]
            digest = hashlib.sha256()
            while chunk := body.read(1 << 20):
                digest.update(chunk)
    return time.perf_counter() - started


def plain_upload_parallel(client: object, bucket: str, paths: list[Path], width: int) -> float:
    from concurrent.futures import ThreadPoolExecutor

    def one(path: Path) -> None:
        client.upload_file(str(path), bucket,  # type: ignore[attr-defined]
                           f"plain/{os.urandom(8).hex()}")

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=width) as pool:
        list(pool.map(one, paths))
    return time.perf_counter() - started


def child(argv: list[str]) -> None:
    """One measured operation in a fresh process (for its peak RSS)."""
    os.environ["REPLICA_URL"] = os.environ["BENCH_REPLICA_URL"]
    django_setup()
    what, arg = argv
    if what == "idle":
        pass
    elif what == "replicate":
        from replica import replicate

        outcome = replicate.replicate_copy(int(arg)).outcome
        assert outcome == replicate.Outcome.VERIFIED, outcome
    elif what == "plain":
        from replica import store

        store.client().upload_file(arg, store.bucket(), f"plain/{os.urandom(8).hex()}")
    elif what == "drill":
        from replica import drill
        from replica.models import Copy

        study = Copy.objects.filter(pk=int(arg)).values_list(
            "instance__series__study_id", flat=True).get()
        todo = drill.targets([study])
        from replica.keys import KeyRing

        ring = KeyRing.from_settings()
        with tempfile.TemporaryDirectory() as scratch:
            for target in todo:
                checked = drill.check(target, ring, Path(scratch))
                assert not checked.error, checked.error
    from peak_rss import peak_rss_kib

    print(f"peak-rss-kib {peak_rss_kib()}")


def peak_rss_mib(*argv: str) -> float:
    """The child's own high-water mark (VmHWM, KiB), as it reports it."""
    done = subprocess.run([sys.executable, __file__, "--child", *argv], check=True,
                          capture_output=True, text=True)
    (line,) = [t for t in done.stdout.splitlines() if t.startswith("peak-rss-kib ")]
    return int(line.split()[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--large-mib", type=int, default=256)
    parser.add_argument("--profile", action="store_true",
                        help="also cProfile the portal's replication of the small objects")
    parser.add_argument("--ingest", type=int, default=100, metavar="N",
                        help="slices ingested with replication off and on (0: skip)")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", ""),
                        help="broker for the 'replication on, queued' ingest row")
    parser.add_argument("--keep-alive", action="store_true",
                        help="moto under gunicorn, connections kept alive (--link: always)")
    parser.add_argument("--link", metavar="UP/DOWN/DELAY",
                        help="Mbit/s up, Mbit/s down, ms each way: moto over a shaped link")
    parser.add_argument("--time-limit", type=int, default=1800, metavar="S",
                        help="--link: give up (and clean up) after this many seconds")
    parser.add_argument("--ingest-rounds", type=int, default=3, metavar="R",
                        help="rounds of the ingest rows, off and on taking turns")
    parser.add_argument("--ingest-profile", action="store_true",
                        help="also cProfile ingest() with replication off and queued")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    if args.link:
        over_link(args)
        return

    from tests.s3_support import MotoServer

    server = MotoServer(keep_alive=args.keep_alive).start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-replica-") as tmp:
            work = Path(tmp)
            bucket = "bench-replica"
            configure(work, server.url, bucket)
            (work / "data" / "dicom").mkdir(parents=True)
            run(work, server.url, bucket, args)
    finally:
        server.stop()


@dataclass
class Stored:
    """The benchmark's objects, stored with no replica, then enrolled for one."""

    client: Any  # plain boto3, to the same endpoint
    small: list[Path]
    large: Path
    small_copies: list[int]
    large_copy: int
    ids: list[int]


def store_objects(work: Path, endpoint: str, bucket: str, small_count: int,
                  write_large_object: Callable[[], Path]) -> Stored:
    import boto3

    django_setup()
    from django.conf import settings
    from django.core.management import call_command

    from imaging.ingest import Outcome, ingest
    from imaging.synthetic import PatientSpec, SeriesSpec, write_study
    from replica import copies
    from replica.models import Copy

    call_command("migrate", verbosity=0)
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **CREDENTIALS)
    client.create_bucket(Bucket=bucket)
    _, small = write_study(work / "small", PatientSpec("BENCH-S", "Bench^Small",
                           datetime.date(1980, 1, 1), "F"), [SeriesSpec("CT", small_count)],
                           study_date=datetime.date(2026, 1, 2), accession="BS",
                           description="small")
    large = write_large_object()
    for path in [*small, large]:
        with path.open("rb") as fp:
            assert ingest(fp, source="bench").outcome == Outcome.STORED
    settings.REPLICA_URL = endpoint
    ids = copies.enrol_existing()
    by_size = dict(Copy.objects.filter(pk__in=ids).values_list("pk", "instance__size_bytes"))
    large_copy = max(by_size, key=lambda pk: by_size[pk])
    return Stored(client, small, large, [pk for pk in ids if pk != large_copy], large_copy,
                  ids)


def run(work: Path, endpoint: str, bucket: str, args: argparse.Namespace) -> None:
    stored = store_objects(work, endpoint, bucket, args.small,
                           lambda: write_large(work, args.large_mib))
    from django.conf import settings

    from replica import drill, replicate
    from replica.models import Copy

    client, small, large = stored.client, stored.small, stored.large
    small_copies, large_copy, ids = stored.small_copies, stored.large_copy, stored.ids
    small_bytes = sum(p.stat().st_size for p in small)
    large_bytes = large.stat().st_size

    rows: list[tuple[str, str, float, int, int]] = []  # (case, side, seconds, objects, bytes)
    seconds = plain_upload(client, bucket, small, read_back=False)
    rows.append(("small", "plain boto3 upload", seconds, len(small), small_bytes))
    seconds = plain_upload(client, bucket, small, read_back=True)
    rows.append(("small", "plain upload + read back", seconds, len(small), small_bytes))
    profile = cProfile.Profile() if args.profile else None
    started = time.perf_counter()
    if profile:
        profile.enable()
    for pk in small_copies:
        assert replicate.replicate_copy(pk).outcome == replicate.Outcome.VERIFIED
    if profile:
        profile.disable()
    rows.append(("small", "portal replication", time.perf_counter() - started,
                 len(small_copies), small_bytes))
    # The same again as a worker runs a dispatched batch: REPLICA_CONCURRENCY copies in
    # flight (replicate_many), against plain uploads with as many at once.
    width = settings.REPLICA_CONCURRENCY
    seconds = plain_upload_parallel(client, bucket, small, width)
    rows.append(("small", f"plain upload, {width} at once", seconds, len(small), small_bytes))
    Copy.objects.filter(pk__in=small_copies).update(state=Copy.State.PENDING, key="",
                                                     claimed_until=None, attempts=0)
    started = time.perf_counter()
    for at in range(0, len(small_copies), settings.REPLICA_DISPATCH_BATCH):
        batch = small_copies[at:at + settings.REPLICA_DISPATCH_BATCH]
        assert {a.outcome for _, a in replicate.replicate_many(batch)} == {
            replicate.Outcome.VERIFIED}
    rows.append(("small", f"portal replication, {width} at once", time.perf_counter() - started,
                 len(small_copies), small_bytes))

    seconds = plain_upload(client, bucket, [large], read_back=False)
    rows.append(("large", "plain boto3 upload", seconds, 1, large_bytes))
    seconds = plain_upload(client, bucket, [large], read_back=True)
    rows.append(("large", "plain upload + read back", seconds, 1, large_bytes))
    started = time.perf_counter()
    assert replicate.replicate_copy(large_copy).outcome == replicate.Outcome.VERIFIED
    rows.append(("large", "portal replication", time.perf_counter() - started, 1, large_bytes))

    report = drill.run(studies=10, byte_limit=1 << 40)
    assert report.ok and report.objects_checked == len(ids), report.failures

    rss_idle = peak_rss_mib("idle", "-")
    rss_plain = peak_rss_mib("plain", str(large))
    rss_replicate = _rss_replicate(large_copy)
    rss_drill = peak_rss_mib("drill", str(large_copy))

    print(f"moto server {endpoint}; {len(small)} x {small_bytes / len(small) / 1e6:.2f} MB and "
          f"1 x {large_bytes / 2**20:.0f} MiB; one at a time unless said; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'case':6} {'side':32} {'s':>8} {'obj/s':>8} {'MB/s':>8} {'/plain up':>10} "
          f"{'/plain up+rb':>12}")
    base: dict[tuple[str, str], float] = {(c, s): sec for c, s, sec, _, _ in rows}
    for case, side, sec, objects, size in rows:
        parallel = base.get((case, f"plain upload, {settings.REPLICA_CONCURRENCY} at once"))
        versus = (f" {parallel / sec:.2f}x of {settings.REPLICA_CONCURRENCY} plain at once"
                  if parallel and "at once" in side else "")
        print(f"{case:6} {side:32} {sec:8.2f} {objects / sec:8.1f} {size / sec / 1e6:8.1f} "
              f"{base[(case, 'plain boto3 upload')] / sec:9.2f}x "
              f"{base[(case, 'plain upload + read back')] / sec:11.2f}x{versus}")
    print(f"restore drill: {report.objects_checked} objects, {report.bytes_checked / 1e6:.0f} MB "
          f"in {report.seconds:.2f} s: {report.objects_checked / report.seconds:.1f} objects/s, "
          f"{report.bytes_checked / report.seconds / 1e6:.1f} MB/s "
          f"({drill.DOWNLOADS} downloads at once)")
    if profile:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
    if args.ingest:
        ingest_rows(work, endpoint, args.ingest, args.redis_url, args.ingest_rounds,
                    args.ingest_profile)
    print(f"peak RSS, large object, own process: plain upload {rss_plain:.0f} MiB, portal "
          f"replication {rss_replicate:.0f} MiB, drill {rss_drill:.0f} MiB (Django loaded "
          f"and idle: {rss_idle:.0f} MiB)")


def ingest_rows(work: Path, endpoint: str, count: int, redis_url: str, rounds: int = 3,
                profile: bool = False) -> None:
    """The one ingest function (what C-STORE, STOW and uploads call) on fresh studies, for
    ``rounds`` rounds in which the cases take turns (a burst of other load on the machine
    then lands on both, not one): replication off; on with its tasks queued to a real Redis
    broker (what the caller waits for in production: the copy rows; the tasks, the copies
    of ingests close together gathered in one, are sent by replica.dispatcher's thread; the
    queue is deleted afterwards, no worker takes it). Then once, on with the tasks run
    in-process after each commit (TASKS_IN_PROCESS: ingest waits for the replication too).
    With ``profile``, one more off and queued study each under cProfile."""
    import statistics

    from django.conf import settings

    from imaging.ingest import Outcome, ingest
    from imaging.synthetic import PatientSpec, SeriesSpec, write_study
    from portal.celery import app
    from replica.dispatcher import dispatcher

    made = 0

    def study(name: str) -> list[Path]:
        nonlocal made
        made += 1
        name = f"{name}{made}"
        return write_study(work / name, PatientSpec(f"BENCH-{name}", f"Bench^{name}",
                           datetime.date(1990, 1, 1), "M"), [SeriesSpec("CT", count)],
                           study_date=datetime.date(2026, 1, 3), accession=name,
                           description=name, seed=10 + made)[1]

    def timed(paths: list[Path], profiler: cProfile.Profile | None = None) -> float:
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        for path in paths:
            with path.open("rb") as fp:
                assert ingest(fp, source="bench").outcome == Outcome.STORED
        if profiler:
            profiler.disable()
        return time.perf_counter() - started

    def off(profiler: cProfile.Profile | None = None) -> float:
        settings.REPLICA_URL = ""
        try:
            return timed(study("off"), profiler)
        finally:
            settings.REPLICA_URL = endpoint

    def queued(profiler: cProfile.Profile | None = None) -> tuple[float, float]:
        import redis

        queue = f"bench-replica-{os.urandom(6).hex()}"
        paths = study("queued")
        app.conf.update(broker_url=redis_url, task_always_eager=False,
                        task_default_queue=queue)
        broker = redis.Redis.from_url(redis_url)
        try:
            seconds = timed(paths, profiler)
            started = time.perf_counter()
            assert dispatcher.wait(120)  # the dispatch thread's sends, off the caller's clock
            # queued, none run: the objects' copies gathered in tasks of at most
            # REPLICA_DISPATCH_BATCH, and the priors' recall of the study
            assert broker.llen(queue) >= count / settings.REPLICA_DISPATCH_BATCH, \
                broker.llen(queue)
            return seconds, seconds + time.perf_counter() - started
        finally:
            app.conf.update(task_always_eager=True)
            broker.delete(queue)

    runs: dict[str, list[float]] = {"replication off": []}
    if redis_url:
        runs["on, tasks queued to Redis"] = []
        runs["  the same, to the last send"] = []
    off()  # the first study of a process carries its one-off set-up: untimed
    for _ in range(rounds):
        runs["replication off"].append(off())
        if redis_url:
            seconds, sent = queued()
            runs["on, tasks queued to Redis"].append(seconds)
            runs["  the same, to the last send"].append(sent)
    runs["on, replicated in-process (once)"] = [timed(study("eager"))]
    print(f"ingest() of {count} CT slices a study, one at a time (SQLite), median (range) "
          f"of {rounds} rounds taking turns:")
    base = statistics.median(runs["replication off"])
    for name, times in runs.items():
        seconds = statistics.median(times)
        print(f"  {name:34} {count / seconds:7.1f} inst/s ({count / max(times):.0f}-"
              f"{count / min(times):.0f}) {base / seconds:6.2f}x of off")
    if profile:
        for name, case in (("off", off), ("queued", queued)):
            if name == "queued" and not redis_url:
                continue
            profiler = cProfile.Profile()
            case(profiler)
            print(f"\ncProfile of ingest(), replication {name}, {count} slices:")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


class OutOfTime(Exception):
    pass


def _out_of_time(signum: int, frame: object) -> None:
    raise OutOfTime("--time-limit reached")


def over_link(args: argparse.Namespace) -> None:
    """The run over an emulated link: namespaces made, used and removed, whatever happens
    (an error, SIGTERM, the time limit)."""
    if os.geteuid() != 0:
        sys.exit("bench/replica.py --link needs root (ip netns, TUN devices)")
    up, down, delay = (float(part) for part in args.link.split("/"))
    from shaped_link import Link, inside, remove_namespaces

    from tests.s3_support import MotoServer, free_port

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    signal.signal(signal.SIGALRM, _out_of_time)
    signal.alarm(args.time_limit)
    remove_namespaces(LINK_PREFIX)
    link: Link | None = None
    server: MotoServer | None = None
    try:
        link = Link(LINK_PREFIX, SERVER_IP, CLIENT_IP, up_bps=up * 1e6, down_bps=down * 1e6,
                    delay_s=delay / 1000)
        with inside(link.server):
            server = MotoServer(port=free_port(), host=SERVER_IP, keep_alive=True).start()
        with inside(link.client), \
                tempfile.TemporaryDirectory(prefix="bench-replica-link-") as tmp:
            work = Path(tmp)
            configure(work, server.url, "bench-replica")
            (work / "data" / "dicom").mkdir(parents=True)
            link_run(work, server.url, "bench-replica", args, link)
    finally:
        signal.alarm(0)
        if server is not None:
            server.stop()
        if link is not None:
            link.stop()
        remove_namespaces(LINK_PREFIX)


def link_run(work: Path, endpoint: str, bucket: str, args: argparse.Namespace,
             link: Link) -> None:
    from shaped_link import interface_bytes

    from tests.test_packing_memory import write_multiframe_ct

    def write_phantom() -> Path:
        write_multiframe_ct(work / "large.dcm", frames=max(1, args.large_mib * 2))  # 512 KiB
        return work / "large.dcm"

    stored = store_objects(work, endpoint, bucket, args.small, write_phantom)
    from django.conf import settings

    from replica import replicate
    from replica.models import Copy

    client, small, large = stored.client, stored.small, stored.large
    small_copies, large_copy = stored.small_copies, stored.large_copy
    width = settings.REPLICA_CONCURRENCY

    def portal(pks: list[int], packing: bool, at_once: bool) -> None:
        settings.REPLICA_PACKING = packing
        Copy.objects.filter(pk__in=pks).update(state=Copy.State.PENDING, key="",
                                                attempt_key="", claimed_until=None,
                                                attempts=0)
        if at_once:
            for at in range(0, len(pks), settings.REPLICA_DISPATCH_BATCH):
                batch = pks[at:at + settings.REPLICA_DISPATCH_BATCH]
                assert {a.outcome for _, a in replicate.replicate_many(batch)} == {
                    replicate.Outcome.VERIFIED}
        else:
            for pk in pks:
                assert replicate.replicate_copy(pk).outcome == replicate.Outcome.VERIFIED

    def run_side(side: str, paths: list[Path], pks: list[int]) -> None:
        if side == "plain boto3 upload":
            plain_upload(client, bucket, paths, False)
        elif side == "plain upload + read back":
            plain_upload(client, bucket, paths, True)
        elif side.startswith("plain upload, "):
            plain_upload_parallel(client, bucket, paths, width)
        else:
            portal(pks, "packing on" in side, "at once" in side)

    cases = [("small", small, small_copies), ("large", [large], [large_copy])]
    rows: list[tuple[str, str, float, int, int, int]] = []
    for case, paths, pks in cases:
        size = sum(p.stat().st_size for p in paths)
        sides = ["plain boto3 upload", "plain upload + read back", "portal, packing off",
                 "portal, packing on"]
        if len(paths) > 1:
            sides += [f"plain upload, {width} at once", f"portal, packing off, {width} at once",
                      f"portal, packing on, {width} at once"]
        for side in sides:
            rx, tx = interface_bytes(link.client)
            started = time.perf_counter()
            run_side(side, paths, pks)
            seconds = time.perf_counter() - started
            rx2, tx2 = interface_bytes(link.client)
            rows.append((case, side, seconds, size, tx2 - tx, rx2 - rx))
            print(f"  {case} {side}: {seconds:.2f} s", file=sys.stderr, flush=True)
    print(f"link {args.link} (Mbit/s up / Mbit/s down / ms each way); moto kept alive; "
          f"{len(small)} x {sum(p.stat().st_size for p in small) / len(small) / 1e6:.2f} MB "
          f"and 1 x {large.stat().st_size / 2**20:.0f} MiB (phantom CT frames); "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| case | side | s | MB/s | MB up | MB down | /plain up | /plain up+rb |")
    print("|---|---|---|---|---|---|---|---|")
    base = {(c, s): sec for c, s, sec, *_ in rows}
    for case, side, sec, size, sent, received in rows:
        plain = base[(case, "plain boto3 upload")]
        if "at once" in side:
            plain = base.get((case, f"plain upload, {width} at once"), plain)
        print(f"| {case} | {side} | {sec:.2f} | {size / sec / 1e6:.2f} | {sent / 1e6:.1f} | "
              f"{received / 1e6:.1f} | {plain / sec:.2f}x | "
              f"{base[(case, 'plain upload + read back')] / sec:.2f}x |")


def _rss_replicate(copy_id: int) -> float:
    """Replicate the large copy again in a child: reset it to pending first."""
    from replica.models import Copy

    Copy.objects.filter(pk=copy_id).update(state=Copy.State.PENDING, claimed_until=None)
    return peak_rss_mib("replicate", str(copy_id))


if __name__ == "__main__":
    main()
