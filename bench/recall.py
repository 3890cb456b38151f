"""WADO-RS study retrieve of a study recalled from the replica, beside the same study read
locally (and beside Orthanc's local WADO-RS), in one run.

    .venv/bin/python bench/recall.py [--slices 50] [--samples 5] [--no-orthanc]

One CT study of ``--slices`` slices, 512x512, 16-bit, stored in a fresh portal (SQLite,
fresh DATA_DIR, served by gunicorn ``--workers 2 --threads 4`` like bench/dicomweb.py, a
bearer ApiToken) with a replica on a real moto S3 server on loopback; every object
replicated (encrypted, read back, verified) at import. Then, with one keep-alive
``requests.Session``:

* local: the whole study, ``--samples`` times after a warm-up (files in the page cache);
* recalled: ``--samples`` times, each right after ``manage.py evict_local`` deleted every
  local file (the clinic's ``evict_local_after_days`` is 0): every object comes from the
  replica, decrypted and hashed as it streams, and is written back to the local tier;
* the floor under a recall: the same objects' ciphertext fetched from moto with boto3,
  serially, nothing decrypted or written;
* Orthanc 1.10 (bench/orthanc.py, DICOMweb plugin), the same files, local.

First byte: the first chunk of the body reaching the client; total: the last. Medians.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import boto3
import requests

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

import by_path  # noqa: E402
from orthanc import OrthancServer  # noqa: E402

from imaging.synthetic import PatientSpec, SeriesSpec, write_study  # noqa: E402
from tests.s3_support import CREDENTIALS, REGION, MotoServer  # noqa: E402

# bench/dicomweb.py by its path: the name "dicomweb" is the portal's DICOMweb app.
bench_dicomweb = by_path.load("dicomweb")
Portal, load_orthanc, log = bench_dicomweb.Portal, bench_dicomweb.load_orthanc, bench_dicomweb.log

PATIENT = PatientSpec("BENCH-RECALL", "Recall^Rita", datetime.date(1968, 7, 1), "F")
DICOM_PARTS = 'multipart/related; type="application/dicom"'
KEYS = "k1:YmVuY2hiZW5jaGJlbmNoYmVuY2hiZW5jaGJlbmNoYmU="  # 32 bytes, for this run only


class ReplicaPortal(Portal):
    """The benchmark portal with a replica configured."""

    def __init__(self, scratch: Path, replica_url: str, bucket: str) -> None:
        super().__init__(scratch, None)
        self.replica = {
            "REPLICA_URL": replica_url, "REPLICA_BUCKET": bucket, "REPLICA_REGION": REGION,
            "REPLICA_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
            "REPLICA_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
            "REPLICA_PREFIX": "objects/", "REPLICA_KEYS": KEYS, "REPLICA_CURRENT_KEY": "k1",
            "TASKS_IN_PROCESS": "1", "RECALL_PRIORS_COUNT": "0",
        }

    def env(self) -> dict[str, str]:
        return {**super().env(), **self.replica}


def whole_study(session: requests.Session, root: str, study: str) -> tuple[float, float, int]:
    """(total seconds, first-byte seconds, body bytes) of one WADO-RS study retrieve."""
    start = time.perf_counter()
    with session.get(f"{root}/studies/{study}", stream=True, timeout=600,
                     headers={"Accept": DICOM_PARTS}) as r:
        r.raise_for_status()
        first = None
        size = 0
        for chunk in r.iter_content(1 << 16):
            if first is None:
                first = time.perf_counter() - start
            size += len(chunk)
    return time.perf_counter() - start, first or 0.0, size


def replica_gets(url: str, bucket: str) -> tuple[float, float, int]:
    """The floor under a recall: every ciphertext object of the bucket fetched with boto3,
    one after another, nothing decrypted or written."""
    s3 = boto3.client("s3", endpoint_url=url, region_name=REGION, **CREDENTIALS)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    start = time.perf_counter()
    first = None
    size = 0
    for key in keys:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        while chunk := body.read(1 << 16):
            if first is None:
                first = time.perf_counter() - start
            size += len(chunk)
    return time.perf_counter() - start, first or 0.0, size


def medians(runs: list[tuple[float, float, int]]) -> tuple[float, float, int]:
    return (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs),
            runs[0][2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=50)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--no-orthanc", action="store_true")
    args = parser.parse_args()

    columns: dict[str, tuple[float, float, int]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-recall-") as tmp:
        scratch = Path(tmp)
        study_uid, files = write_study(
            scratch / "study", PATIENT, [SeriesSpec("CT", args.slices, size=512)],
            study_date=datetime.date(2026, 2, 1), accession="BENCH-RECALL-1",
            description="CT recall")
        log(f"{len(files)} slices, {sum(p.stat().st_size for p in files) / 1e6:.1f} MB")
        moto = MotoServer().start()
        try:
            bucket = f"bench-{uuid.uuid4().hex[:12]}"
            boto3.client("s3", endpoint_url=moto.url, region_name=REGION,
                         **CREDENTIALS).create_bucket(Bucket=bucket)
            portal = ReplicaPortal(scratch, moto.url, bucket)
            portal.setup()
            portal.import_folder(scratch / "study")
            log(portal.manage("replicate", "--all-pending", "--no-progress").strip())
            portal.manage("shell", "-c", (
                "from accounts.models import Clinic\n"
                "from imaging.models import Patient\n"
                "c = Clinic.objects.create(name='Bench', evict_local_after_days=0)\n"
                "Patient.objects.update(clinic=c)\n"))
            with portal.serve("portal.wsgi") as root:
                session = requests.Session()
                session.headers["Authorization"] = f"Bearer {portal.token}"
                whole_study(session, root, study_uid)  # warm-up
                columns["portal, local"] = medians(
                    [whole_study(session, root, study_uid) for _ in range(args.samples)])
                recalled = []
                for _ in range(args.samples):
                    evicted = portal.manage("evict_local").strip()
                    assert f"evicted {len(files)} objects" in evicted, evicted
                    recalled.append(whole_study(session, root, study_uid))
                columns["portal, recalled"] = medians(recalled)
                columns["portal, local after recall"] = medians(
                    [whole_study(session, root, study_uid) for _ in range(args.samples)])
            columns["replica GETs alone, serial"] = medians(
                [replica_gets(moto.url, bucket) for _ in range(args.samples)])
        finally:
            moto.stop()
        if not args.no_orthanc:
            with OrthancServer() as orthanc:
                load_orthanc(orthanc, files)
                session = requests.Session()
                url = orthanc.dicomweb_url.rstrip("/")
                whole_study(session, url, study_uid)
                columns["Orthanc, local"] = medians(
                    [whole_study(session, url, study_uid) for _ in range(args.samples)])

    print(f"\nWADO-RS study retrieve, {args.slices} CT slices 512x512, median of "
          f"{args.samples}")
    print(f"{'':30} {'first byte':>12} {'total':>10} {'MB/s':>8} {'body MB':>8}")
    for label, (total, first, size) in columns.items():
        print(f"{label:30} {first * 1000:>9.1f} ms {total * 1000:>7.0f} ms "
              f"{size / total / 1e6:>8.1f} {size / 1e6:>8.1f}")


if __name__ == "__main__":
    main()
