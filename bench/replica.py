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
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import datetime
import hashlib
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


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

    from imaging.synthetic import PatientSpec, SeriesSpec, write_study

    _, (seed,) = write_study(folder / "seed", PatientSpec("BENCH-L", "Bench^Large",
                             datetime.date(1970, 1, 1), "O"), [SeriesSpec("CT", 1, size=64)],
                             study_date=datetime.date(2026, 1, 1), accession="BL",
                             description="large")
    ds = pydicom.dcmread(seed)
    frames = max(1, (mib << 20) // (4096 * 4096 * 2))
    ds.Rows = ds.Columns = 4096
    ds.NumberOfFrames = frames
    del ds.PixelData
    path = folder / "large.dcm"
    ds.save_as(path, enforce_file_format=True)
    length = frames * 4096 * 4096 * 2
    with path.open("ab") as out:  # (7FE0,0010) OW, explicit VR little endian
        out.write(b"\xe0\x7f\x10\x00OW\x00\x00" + length.to_bytes(4, "little"))
        block = os.urandom(8 << 20)
        left = length
        while left:
            out.write(block[:min(left, len(block))])
            left -= min(left, len(block))
    return path


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
    # VmHWM, not ru_maxrss: the latter keeps the parent's high-water mark across exec.
    (hwm,) = [t for t in Path("/proc/self/status").read_text().splitlines()
              if t.startswith("VmHWM:")]
    print(f"peak-rss-kib {hwm.split()[1]}")


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
    parser.add_argument("--ingest-rounds", type=int, default=3, metavar="R",
                        help="rounds of the ingest rows, off and on taking turns")
    parser.add_argument("--ingest-profile", action="store_true",
                        help="also cProfile ingest() with replication off and queued")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return

    from tests.s3_support import MotoServer

    server = MotoServer().start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-replica-") as tmp:
            work = Path(tmp)
            bucket = "bench-replica"
            configure(work, server.url, bucket)
            (work / "data" / "dicom").mkdir(parents=True)
            run(work, server.url, bucket, args)
    finally:
        server.stop()


def run(work: Path, endpoint: str, bucket: str, args: argparse.Namespace) -> None:
    import boto3

    django_setup()
    from django.conf import settings
    from django.core.management import call_command

    from imaging.ingest import Outcome, ingest
    from imaging.synthetic import PatientSpec, SeriesSpec, write_study
    from replica import copies, drill, replicate
    from replica.models import Copy

    call_command("migrate", verbosity=0)
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **CREDENTIALS)
    client.create_bucket(Bucket=bucket)

    _, small = write_study(work / "small", PatientSpec("BENCH-S", "Bench^Small",
                           datetime.date(1980, 1, 1), "F"), [SeriesSpec("CT", args.small)],
                           study_date=datetime.date(2026, 1, 2), accession="BS",
                           description="small")
    large = write_large(work, args.large_mib)
    for path in [*small, large]:
        with path.open("rb") as fp:
            assert ingest(fp, source="bench").outcome == Outcome.STORED
    small_bytes = sum(p.stat().st_size for p in small)
    large_bytes = large.stat().st_size

    settings.REPLICA_URL = endpoint
    ids = copies.enrol_existing()
    by_size = dict(Copy.objects.filter(pk__in=ids).values_list("pk", "instance__size_bytes"))
    large_copy = max(by_size, key=lambda pk: by_size[pk])
    small_copies = [pk for pk in ids if pk != large_copy]

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


def _rss_replicate(copy_id: int) -> float:
    """Replicate the large copy again in a child: reset it to pending first."""
    from replica.models import Copy

    Copy.objects.filter(pk=copy_id).update(state=Copy.State.PENDING, claimed_until=None)
    return peak_rss_mib("replicate", str(copy_id))


if __name__ == "__main__":
    main()
