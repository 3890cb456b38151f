"""Several hosts on one machine, for real: nodes killed mid-work lose nothing.

The cluster (deploy/cluster) is a service host with its own PostgreSQL and Redis, an S3
host (moto), two web nodes, two DICOM listener nodes, two Celery workers and a beat, each
in its own network namespace, with HAProxy in front of the web nodes and of the listeners.
Clients (DCMTK's storescu, curl) run on a client host and talk only to the load balancers.
Every scenario ends with exact counts and byte-identical objects.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread

from deploy.cluster import network
from deploy.cluster.hosts import (
    DICOM_PORT,
    LISTENER_NODES,
    MODALITY,
    WEB_NODES,
    WEB_PORT,
    WORKER_NODES,
    Cluster,
    address,
    api_token,
    storescu_argv,
    temporary_root,
)
from deploy.cluster.load import Day, run_locust, watching, write_plan
from dicomweb.stow import STORE_BATCH
from dimse.testing import dataset_bytes
from imaging.synthetic import PatientSpec, SeriesSpec, write_study
from tests.wado_support import parse_multipart

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SUCCESS = re.compile(r"Received Store Response \((Success|Warning)")


def _why_not() -> str | None:
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    if shutil.which("haproxy") is None:
        return "HAProxy is not installed (apt-get install haproxy; .ci/run installs it)"
    return network.netns_permitted()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    problem = _why_not()
    if problem:
        pytest.skip(f"the cluster needs network namespaces: {problem}")
    cluster = Cluster(temporary_root())
    try:
        cluster.up()
        yield cluster
    finally:
        cluster.down()
        keep = os.environ.get("CLUSTER_KEEP_LOGS")  # a folder for the nodes' logs
        if keep:
            shutil.copytree(cluster.root / "logs", Path(keep), dirs_exist_ok=True)
        shutil.rmtree(cluster.root, ignore_errors=True)


@pytest.fixture(scope="module")
def token(cluster: Cluster) -> str:
    return api_token(cluster)


def study(folder: Path, n: int, slices: int, *, size: int = 64) -> list[Path]:
    _, paths = write_study(
        folder, PatientSpec(f"CLUSTER-{n:03d}", f"Cluster^Patient{n}",
                            datetime.date(1970, 1, 1 + n % 28), "O"),
        [SeriesSpec("CT", slices, size=size)], study_date=datetime.date(2026, 1, 5),
        accession=f"ACC-CL-{n}", description="cluster", seed=n)
    return sorted(paths)


def storescu(cluster: Cluster, paths: list[Path]) -> subprocess.Popen[str]:
    """DCMTK's storescu sending ``paths`` in order over one association, via the DICOM LB."""
    argv = storescu_argv(paths, timeout=20, dimse_timeout=20)
    return subprocess.Popen(network.in_host("client", argv), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={"PATH": "/usr/bin:/bin", "TCP_NODELAY": "1"})


def answered(output: str) -> int:
    """How many objects storescu was told were stored (it sends them in order)."""
    return len(SUCCESS.findall(output))


def stored(cluster: Cluster) -> dict[str, tuple[str, str]]:
    """SOP Instance UID -> (blob key, SHA-256) of every indexed instance."""
    rows = cluster.sql("SELECT sop_instance_uid, blob_key, sha256 FROM imaging_instance")
    return {str(uid): (str(key), str(sha)) for uid, key, sha in rows}


def uid_of(path: Path) -> str:
    return path.stem  # write_study names each file by its SOP Instance UID


def assert_archived_as_sent(cluster: Cluster, paths: list[Path]) -> None:
    """Each file is indexed once, and its stored blob holds the same dataset, bit for bit,
    with the SHA-256 its row records."""
    index = stored(cluster)
    for path in paths:
        key, sha = index[uid_of(path)]
        blob = cluster.storage / key
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == sha
        assert dataset_bytes(blob) == dataset_bytes(path)


def leftovers(cluster: Cluster) -> list[Path]:
    """Files in any node's spool (received, answered, not yet indexed, or set aside)."""
    spools = cluster.root / "shared" / "spool"
    return [p for p in spools.rglob("*") if p.is_file()] if spools.exists() else []


def unanswered(cluster: Cluster, node: str) -> list[Path]:
    """What a killed listener was still receiving: pynetdicom's temporary files of C-STORE
    bodies never answered (never indexed, never in storage; safe to delete)."""
    return [p for p in (cluster.root / "shared" / "tmp" / node).glob("*") if p.is_file()]


#: The waits are upper bounds, doubled: the suite runs on two workers, so the cluster shares
#: the machine's two cores with other tests.
WAIT_SCALE = 2.0


def wait_until(condition, timeout: float, what: str, every: float = 0.1) -> float:
    started = time.monotonic()
    timeout *= WAIT_SCALE
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(every)
    return time.monotonic() - started


def echo(cluster: Cluster) -> bool:
    return cluster.run("client", ["echoscu", "-aet", MODALITY, "-aec", "PORTAL", "-to", "3",
                                  address("lb-dicom"), str(DICOM_PORT)],
                       check=False, timeout=15).returncode == 0


def test_a_listener_killed_mid_association_loses_no_answered_object(cluster, tmp_path):
    studies = [study(tmp_path / f"s{n}", n, 30, size=128) for n in range(4)]
    every = [p for s in studies for p in s]
    before = len(stored(cluster))
    # The client's link at 4 Mbit/s: the associations last seconds, so the kill lands in
    # the middle of them.
    cluster.run("client", ["tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate",
                           "4mbit", "burst", "16kb", "latency", "500ms"])
    try:
        senders = [storescu(cluster, s) for s in studies]
        wait_until(lambda: len(stored(cluster)) - before >= 30, 60, "objects arriving")
        cluster.nodes["dicom-a"].kill()
        failover = wait_until(lambda: echo(cluster), 30, "a C-ECHO through the LB",
                              every=0.0)
        outputs = [s.communicate(timeout=120)[0] for s in senders]
    finally:
        cluster.run("client", ["tc", "qdisc", "del", "dev", "eth0", "root"])
    interrupted = [i for i, s in enumerate(senders) if s.returncode != 0]
    assert interrupted, "the kill interrupted no association"
    assert len(interrupted) < len(senders), "the other listener was interrupted too"
    answered_ok = [p for s, out in zip(studies, outputs, strict=True)
                   for p in s[:answered(out)]]
    # What the dead node answered for but had not indexed is in its spool, until it is back.
    index = stored(cluster)
    pending = [p for p in answered_ok if uid_of(p) not in index]
    spooled_by_a = [p for p in leftovers(cluster) if "dicom-a" in p.parts]
    spooled_uids = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID)
                    for p in spooled_by_a}
    assert {uid_of(p) for p in pending} <= spooled_uids
    # Besides those, at most one per cut association: spooled whole, killed before its
    # answer went out (the sender's retry of it ends as a duplicate).
    assert len(spooled_by_a) <= len(pending) + len(interrupted)
    # The modalities send their whole study again, through the LB (to the live node).
    for i in interrupted:
        retry = storescu(cluster, studies[i])
        out = retry.communicate(timeout=120)[0]
        assert retry.returncode == 0, out
        assert answered(out) == len(studies[i]), out
        assert "Duplicate SOP" not in out and "Refused" not in out, out
    cluster.start_listener("dicom-a")
    cluster.wait_for_port("dicom-a", DICOM_PORT)
    cluster.wait_backends_up("dicom", LISTENER_NODES)  # back in the balancer, for what follows
    wait_until(lambda: not leftovers(cluster), 30, "dicom-a's spool recovered")
    index = stored(cluster)
    assert len(index) - before == len(every)
    assert all(uid_of(p) in index for p in answered_ok)
    assert_archived_as_sent(cluster, every)
    assert not leftovers(cluster)
    blobs = [p for p in cluster.storage.rglob("*") if p.is_file()]
    assert len(blobs) == len(index), "a blob without an index row was left behind"
    print(f"\nlistener failover: a C-ECHO through the LB answered {failover:.2f}s after "
          f"the kill; {len(pending)} answered objects recovered from the dead node's spool; "
          f"{len(unanswered(cluster, 'dicom-a'))} unanswered partial bodies in its TMPDIR")


def qido_statuses(cluster: Cluster, token: str, seconds: float) -> subprocess.Popen[str]:
    """A client asking QIDO-RS through the web LB for ``seconds``: one status a line."""
    script = (f"end=$((SECONDS+{int(seconds)})); while [ $SECONDS -lt $end ]; do "
              f"curl -s -o /dev/null -m 5 -w '%{{http_code}}\\n' -H 'Authorization: Bearer "
              f"{token}' {cluster.web_url}/dicomweb/studies; done")
    return subprocess.Popen(network.in_host("client", ["bash", "-c", script]),
                            stdout=subprocess.PIPE, text=True)


def test_postgresql_restarted_under_load_gives_503_then_everything_continues(
        cluster, token, tmp_path):
    pids = {name: cluster.nodes[name].process.pid
            for name in (*WEB_NODES, *LISTENER_NODES, *WORKER_NODES)}
    load = qido_statuses(cluster, token, 12)
    time.sleep(2)  # the load running before the outage is the point, not a synchronisation
    cluster.stop_postgres()
    try:
        answer = cluster.run("client", ["curl", "-s", "-i", "-m", "10", "-H",
                                        "Accept-Language: en", "-H",
                                        f"Authorization: Bearer {token}",
                                        f"{cluster.web_url}/dicomweb/studies"]).stdout
        objects = study(tmp_path / "down", 90, 2)
        refused = storescu(cluster, objects)
        refused_out = refused.communicate(timeout=60)[0]
    finally:
        cluster.start_postgres()
    statuses = load.communicate(timeout=60)[0].split()
    assert answer.startswith("HTTP/1.1 503"), answer
    assert re.search(r"^Retry-After: \d+", answer, re.M | re.I), answer
    assert "database is unavailable" in answer  # the reason, in words
    assert answered(refused_out) == 0 and refused.returncode != 0, refused_out
    assert set(statuses) <= {"200", "503"}, statuses
    assert "503" in statuses and statuses[-1] == "200", statuses
    # Nothing was restarted: the same processes answer, and store again.
    assert {name: cluster.nodes[name].process.pid for name in pids} == pids
    again = storescu(cluster, objects)
    out = again.communicate(timeout=60)[0]
    assert again.returncode == 0 and answered(out) == len(objects), out
    assert_archived_as_sent(cluster, objects)
    print(f"\nPostgreSQL outage: {statuses.count('503')} of {len(statuses)} QIDO requests "
          "answered 503, the rest 200")


def replica_states(cluster: Cluster, uids: list[str]) -> dict[str, int]:
    rows = cluster.sql(
        "SELECT c.state, count(*) FROM replica_copy c JOIN imaging_instance i"
        " ON i.id = c.instance_id WHERE c.tier = 'replica' AND i.sop_instance_uid = ANY(%s)"
        " GROUP BY c.state", uids)
    return {str(state): int(n) for state, n in rows}  # type: ignore[call-overload]


def failed_attempts(cluster: Cluster, uids: list[str]) -> int:
    """Replica copies that were tried, and failed, at least once."""
    rows = cluster.sql(
        "SELECT count(*) FROM replica_copy c JOIN imaging_instance i ON i.id = c.instance_id"
        " WHERE c.tier = 'replica' AND i.sop_instance_uid = ANY(%s) AND c.attempts > 0"
        " AND c.last_error <> ''", uids)
    return int(str(rows[0][0]))


def s3_keys(cluster: Cluster) -> set[str]:
    listing = cluster.run("client", ["curl", "-sf", f"{cluster.s3_url}/replica?list-type=2"
                                     "&max-keys=10000"]).stdout
    return set(re.findall(r"<Key>([^<]+)</Key>", listing))


NODES_USING_S3 = (*WEB_NODES, *LISTENER_NODES, *WORKER_NODES, "beat")


def test_with_s3_unreachable_ingest_goes_on_locally_and_the_backlog_drains(
        cluster, tmp_path):
    objects = study(tmp_path / "s3down", 91, 12)
    uids = [uid_of(p) for p in objects]
    for host in NODES_USING_S3:
        network.cut_off(host, address("s3"))
    try:
        sender = storescu(cluster, objects)
        out = sender.communicate(timeout=120)[0]
        assert sender.returncode == 0 and answered(out) == len(objects), out
        assert_archived_as_sent(cluster, objects)  # the local tier has every object
        wait_until(lambda: sum(replica_states(cluster, uids).values()) == len(objects), 30,
                   "a replica copy row per object")
        # The workers try, fail, and keep the copies to try again: a backlog, not a loss.
        wait_until(lambda: failed_attempts(cluster, uids) == len(objects), 30,
                   "every replica copy tried and failed")
        backlog = replica_states(cluster, uids)
        assert backlog.get("verified", 0) == 0, backlog
    finally:
        for host in NODES_USING_S3:
            network.reconnect(host, address("s3"))
    reconnected = time.monotonic()
    drained = wait_until(lambda: replica_states(cluster, uids) == {"verified": len(objects)},
                         90, "the replica backlog drained", every=0.5)
    keys = {str(k) for (k,) in cluster.sql(
        "SELECT c.key FROM replica_copy c JOIN imaging_instance i ON i.id = c.instance_id"
        " WHERE c.tier = 'replica' AND i.sop_instance_uid = ANY(%s)", uids)}
    assert len(keys) == len(objects) and keys <= s3_keys(cluster)
    print(f"\nS3 outage: {len(objects)} objects stored locally, replica backlog drained "
          f"{drained:.1f}s after S3 came back ({time.monotonic() - reconnected:.1f}s)")


# --- b: a web node killed during STOW-RS uploads and WADO-RS downloads ---------------------

BOUNDARY = "cluster-stow-boundary"
STUDY_PARTS = 'multipart/related; type="application/dicom"'
# Bytes a second each client sends or reads: the transfers last ten seconds or more.
RATE = "40k"
DOWNLOAD_RATE = "100k"


def stow_body(folder: Path, paths: list[Path]) -> Path:
    body = folder / "stow.body"
    with body.open("wb") as out:
        for path in paths:
            out.write(f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode())
            out.write(path.read_bytes())
            out.write(b"\r\n")
        out.write(f"--{BOUNDARY}--\r\n".encode())
    return body


def curl(cluster: Cluster, token: str, *args: str, rate: str | None = None,
         ) -> subprocess.Popen[bytes]:
    """curl on the client host, through the web LB; its stdout is what it received."""
    argv = ["curl", "-s", "-S", "-m", "90", "-H", f"Authorization: Bearer {token}",
            *(["--limit-rate", rate] if rate else []), *args]
    return subprocess.Popen(network.in_host("client", argv), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def stow(cluster: Cluster, token: str, body: Path, rate: str | None = None,
         ) -> subprocess.Popen[bytes]:
    return curl(cluster, token, "-X", "POST", "-H", "Accept: application/dicom+json",
                "-H", f'Content-Type: {STUDY_PARTS}; boundary={BOUNDARY}',
                "-w", "\n%{http_code}", "--data-binary", f"@{body}",
                f"{cluster.web_url}/dicomweb/studies", rate=rate)


def stow_answer(output: bytes) -> tuple[int, dict[str, object]]:
    """(HTTP status, store response) of a finished ``stow``; (0, {}) when unanswered."""
    text = output.decode()
    body, _, status = text.rpartition("\n")
    if not status.isdigit() or status == "000":
        return 0, {}
    return int(status), json.loads(body) if body.strip() else {}


def wado(cluster: Cluster, token: str, study_uid: str, out: Path, *extra: str,
         rate: str | None = None) -> subprocess.Popen[bytes]:
    """The whole study as stored, into ``out`` (headers beside it)."""
    return curl(cluster, token, "-H", f"Accept: {STUDY_PARTS}; transfer-syntax=*",
                "-D", f"{out}.headers", "-o", str(out), *extra,
                f"{cluster.web_url}/dicomweb/studies/{study_uid}", rate=rate)


def header(path: Path, name: str) -> str:
    """The last value of header ``name`` in curl's ``-D`` file."""
    values = [line.partition(":")[2].strip()
              for line in path.read_text(errors="replace").splitlines()
              if line.lower().startswith(name.lower() + ":")]
    return values[-1]


SMALL_BUFFERS = "4096 16384 65536"
DEFAULT_BUFFERS = {"rmem": "4096 131072 6291456", "wmem": "4096 16384 4194304"}


def small_socket_buffers(cluster: Cluster, hosts: tuple[str, ...], *,
                         restore: bool = False) -> None:
    """Socket buffers of 64 kB on ``hosts`` (or Linux's defaults back): a download then
    moves at the client's pace all the way back to the web node, instead of being written
    ahead into the kernel and HAProxy (where it would outlive the process that wrote it)."""
    for host in hosts:
        for name in ("rmem", "wmem"):
            value = DEFAULT_BUFFERS[name] if restore else SMALL_BUFFERS
            cluster.run(host, ["sysctl", "-q", "-w", f"net.ipv4.tcp_{name}={value}"])


def test_a_web_node_killed_during_uploads_and_downloads_loses_and_half_stores_nothing(
        cluster, token, tmp_path):
    # Four studies already archived, for the downloads (2 MB each).
    archived = [study(tmp_path / f"d{n}", 100 + n, 16, size=256) for n in range(4)]
    for n, paths in enumerate(archived):
        seeded = stow(cluster, token, stow_body(tmp_path / f"d{n}", paths))
        status, _ = stow_answer(seeded.communicate(timeout=60)[0])
        assert status == 200
    # Uploads of 64 objects: the first 32 are indexed (one transaction) while the rest are
    # still on the wire.
    uploads = [study(tmp_path / f"u{n}", 110 + n, 2 * STORE_BATCH) for n in range(4)]
    bodies = [stow_body(tmp_path / f"u{n}", paths) for n, paths in enumerate(uploads)]
    before = len(stored(cluster))
    # Started one by one in the order up, up, down, down, ...: HAProxy's round robin gives
    # each pair one connection on each web node, so both kinds are cut by the kill.
    senders: list[subprocess.Popen[bytes]] = []
    readers: list[subprocess.Popen[bytes]] = []
    outs = [tmp_path / f"download-{n}" for n in range(4)]
    try:
        small_socket_buffers(cluster, ("web-a", "web-b", "lb-web", "client"))
        for pair in range(2):
            for n in (2 * pair, 2 * pair + 1):
                senders.append(stow(cluster, token, bodies[n], rate=RATE))
                time.sleep(0.2)
            for n in (2 * pair, 2 * pair + 1):
                readers.append(wado(cluster, token, uid_of_study(archived[n]), outs[n],
                                    rate=DOWNLOAD_RATE))
                time.sleep(0.2)
        wait_until(lambda: all(len(stored_of(cluster, u)) >= STORE_BATCH for u in uploads),
                   60, "each upload's first batch indexed", every=0.2)
        cluster.nodes["web-a"].kill()
        sent = [stow_answer(s.communicate(timeout=120)[0]) for s in senders]
        for reader in readers:
            reader.communicate(timeout=120)
    finally:
        for process in (*senders, *readers):
            if process.poll() is None:
                process.kill()
        small_socket_buffers(cluster, ("web-b", "lb-web", "client"), restore=True)
    answered_ok = [n for n, (status, _) in enumerate(sent) if status == 200]
    cut_uploads = [n for n, (status, _) in enumerate(sent) if status == 0]
    assert all(status in (0, 200) for status, _ in sent), sent
    assert answered_ok and cut_uploads, sent
    # Every upload answered with success is in the archive, byte for byte.
    assert_archived_as_sent(cluster, [p for n in answered_ok for p in uploads[n]])
    # The clients send again what was never answered: what the dead node had stored comes
    # back as a duplicate (success), not as a conflict.
    index = stored(cluster)
    already = {n: stored_of(cluster, uploads[n]) for n in cut_uploads}
    assert all(len(uids) >= STORE_BATCH for uids in already.values())
    for n in cut_uploads:
        retry = stow(cluster, token, bodies[n])
        status, answer = stow_answer(retry.communicate(timeout=60)[0])
        assert status == 200, answer
        assert "00081198" not in answer  # no Failed SOP Sequence
        assert len(answer["00081199"]["Value"]) == len(uploads[n])  # type: ignore[index]
    index_after = stored(cluster)
    for uids in already.values():
        assert all(index_after[uid] == index[uid] for uid in uids)  # the same blob, kept
    assert len(index_after) - before == sum(len(u) for u in uploads)
    assert_archived_as_sent(cluster, [p for u in uploads for p in u])
    # No row lacks its blob (above); what the dead node had written of a batch it never
    # committed is an orphan, a blob no row names, which reconciliation finds and sets
    # aside (never deleted), as after any ingest killed between its blob and its commit.
    kept = {key for key, _ in index_after.values()}
    orphans = {p.relative_to(cluster.storage).as_posix()
               for p in cluster.storage.rglob("*") if p.is_file()} - kept
    assert orphans  # the kill landed in the middle of a batch
    check = cluster.manage("worker-a", "reconcile", "--tier", "local", "--min-age", "0",
                           "--quarantine", check=False)
    found = set(re.findall(r"^local orphan: (\S+):", check.stdout + check.stderr, re.M))
    assert found == orphans and check.returncode == 0, check.stdout + check.stderr
    quarantine = cluster.storage / "quarantine"
    live = [p for p in cluster.storage.rglob("*") if p.is_file()
            and not p.is_relative_to(quarantine)]
    assert len(live) == len(index_after), "a blob without an index row was left behind"
    # Downloads cut by the kill resume where they stopped, against the other node.
    cut_downloads = [n for n, r in enumerate(readers) if r.returncode != 0]
    assert cut_downloads and len(cut_downloads) < len(readers), [
        (r.returncode, out.stat().st_size if out.exists() else None,
         Path(f"{out}.headers").read_text()[:200] if Path(f"{out}.headers").exists() else "")
        for r, out in zip(readers, outs, strict=True)]
    resumed_at = {n: outs[n].stat().st_size if outs[n].exists() else 0 for n in cut_downloads}
    for n in cut_downloads:
        etag = header(Path(f"{outs[n]}.headers"), "ETag")
        rest = wado(cluster, token, uid_of_study(archived[n]), outs[n], "-C", "-",
                    "-H", f"If-Range: {etag}")
        rest.communicate(timeout=60)
        assert rest.returncode == 0
        assert resumed_at[n] > 0, "a download cut before its first byte is no resume"
        assert header(Path(f"{outs[n]}.headers"), "Content-Range").startswith(
            f"bytes {resumed_at[n]}-")
    for n, out in enumerate(outs):
        content_type = header(Path(f"{out}.headers"), "Content-Type")
        parts = parse_multipart(content_type, out.read_bytes())
        assert sorted(payload for _, payload in parts) == sorted(
            p.read_bytes() for p in archived[n])
    cluster.nodes["web-a"].start()
    cluster.wait_for_port("web-a", WEB_PORT)
    cluster.wait_backends_up("web", WEB_NODES)
    duplicates = sum(len(uids) for uids in already.values())
    print(f"\nweb node killed: {len(answered_ok)} uploads answered, {len(cut_uploads)} cut "
          f"and sent again ({duplicates} of their objects already stored, taken as "
          f"duplicates; {len(orphans)} uncommitted blobs quarantined); "
          f"{len(cut_downloads)} downloads cut and resumed at "
          f"{sorted(resumed_at.values())} bytes")


def stored_of(cluster: Cluster, paths: list[Path]) -> list[str]:
    """The SOP Instance UIDs of ``paths`` that are indexed."""
    return [str(uid) for (uid,) in cluster.sql(
        "SELECT sop_instance_uid FROM imaging_instance WHERE sop_instance_uid = ANY(%s)",
        [uid_of(p) for p in paths])]


def uid_of_study(paths: list[Path]) -> str:
    return str(dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)


# --- c: a worker node killed during replication and a data export --------------------------

EXPORT = """
from accounts.models import User
from imaging.models import Patient
from privacy.export import request_export
patient = Patient.objects.get(patient_id={patient!r})
print(request_export(patient, User.objects.get(username="cluster-admin")).pk)
"""


def pause(cluster: Cluster, node: str, signum: int) -> None:
    """SIGSTOP (or SIGCONT) to every process of ``node``: it holds its broker connection
    but takes no task."""
    process = cluster.nodes[node].process
    assert process is not None
    os.killpg(process.pid, signum)


def all_replica_keys(cluster: Cluster) -> set[str]:
    return {str(k) for (k,) in cluster.sql(
        "SELECT key FROM replica_copy WHERE tier = 'replica' AND key <> ''")}


def export_row(cluster: Cluster, pk: int) -> tuple[str, str, int]:
    rows = cluster.sql("SELECT status, file_key, num_instances FROM privacy_dataexport"
                       " WHERE id = %s", pk)
    status, key, count = rows[0]
    return str(status), str(key), int(str(count))


def test_a_worker_killed_during_replication_and_an_export_leaves_each_done_once(
        cluster, token, tmp_path):
    objects = study(tmp_path / "w", 120, 24)
    uids = [uid_of(p) for p in objects]
    # worker-a sends at 1 kB/s: each query and upload it makes takes a while, so the kill
    # lands in the middle of its work.
    shape = ["tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "8kbit", "burst",
             "1600", "latency", "30s"]
    cluster.run("worker-a", shape)
    try:
        # Replication: worker-b paused, worker-a killed with part of the copies verified.
        pause(cluster, "worker-b", signal.SIGSTOP)
        try:
            sender = storescu(cluster, objects)
            out = sender.communicate(timeout=60)[0]
            assert sender.returncode == 0 and answered(out) == len(objects), out
            # Generous: at 1 kB/s a loaded machine takes its time to the first copy.
            wait_until(lambda: replica_states(cluster, uids).get("verified", 0) >= 1, 180,
                       "worker-a replicating")
            cluster.nodes["worker-a"].kill()
            at_kill = replica_states(cluster, uids).get("verified", 0)
        finally:
            pause(cluster, "worker-b", signal.SIGCONT)
        assert at_kill < len(objects), "the kill came after the last copy"
        drained = wait_until(
            lambda: replica_states(cluster, uids) == {"verified": len(objects)}, 90,
            "worker-b finished the replication", every=0.5)
        # Data export: worker-b paused, worker-a (back) killed while building it. The beat
        # is paused too and worker-b first takes what the sweeps queued: at 1 kB/s worker-a
        # would otherwise go through periodic tasks (one every few seconds, each slower
        # than that over its link) and reach the export only minutes later.
        try:
            pause(cluster, "beat", signal.SIGSTOP)
            wait_until(lambda: cluster.queue_depth() == 0, 60, "worker-b emptied the queue")
            pause(cluster, "worker-b", signal.SIGSTOP)
            # worker-a back, at full speed until it is ready (a start at 1 kB/s is slow).
            cluster.run("worker-a", ["tc", "qdisc", "del", "dev", "eth0", "root"])
            log = cluster.nodes["worker-a"].log
            starts = log.read_text(errors="replace").count(" ready.")
            cluster.nodes["worker-a"].start()
            wait_until(lambda: log.read_text(errors="replace").count(" ready.") > starts, 60,
                       "worker-a ready again", every=0.2)
            cluster.run("worker-a", shape)
            pk = int(cluster.manage("web-b", "shell", "-c", EXPORT.format(
                patient="CLUSTER-120")).stdout.split()[-1])
            # At 1 kB/s the claim's queries alone take a while on a loaded machine.
            wait_until(lambda: export_row(cluster, pk)[0] == "running", 180,
                       "worker-a building the export", every=0.05)
            cluster.nodes["worker-a"].kill()
        finally:
            pause(cluster, "worker-b", signal.SIGCONT)
            pause(cluster, "beat", signal.SIGCONT)
        assert export_row(cluster, pk)[0] == "running", "the kill came after the export"
        finished = wait_until(lambda: export_row(cluster, pk)[0] == "ready", 90,
                              "worker-b finished the export", every=0.5)
    finally:
        cluster.run("worker-a", ["tc", "qdisc", "del", "dev", "eth0", "root"], check=False)
        if not cluster.nodes["worker-a"].running:
            cluster.nodes["worker-a"].start()
    # Each copy verified once: one replica copy per object, and no object in S3 that no
    # copy names (a second upload of the same copy would be one).
    rows = cluster.sql(
        "SELECT count(*), count(DISTINCT c.instance_id) FROM replica_copy c JOIN"
        " imaging_instance i ON i.id = c.instance_id WHERE c.tier = 'replica'"
        " AND i.sop_instance_uid = ANY(%s)", uids)
    assert rows[0] == (len(objects), len(objects))
    assert {k for k in s3_keys(cluster) if k.startswith("objects/")} == all_replica_keys(cluster)
    # One export output, complete.
    _, key, count = export_row(cluster, pk)
    assert count == len(objects)
    exports = cluster.root / "shared" / "media" / "exports"
    assert [p.name for p in exports.iterdir()] == [Path(key).name]
    with zipfile.ZipFile(exports / Path(key).name) as archive:
        assert archive.testzip() is None
        members = {Path(n).stem for n in archive.namelist() if n.endswith(".dcm")}
    assert members == set(uids)
    print(f"\nworker killed: replication {at_kill}/{len(objects)} verified at the kill, "
          f"finished by the other worker {drained:.1f}s later; the export it was building "
          f"finished by the other worker {finished:.1f}s after the kill")


# --- load: a clinic's day in seconds (bench/load.py runs it for minutes) -------------------
def test_a_clinics_day_under_load_gives_no_error_on_any_kind_of_request(cluster, token,
                                                                          tmp_path):
    day = Day(archived=2, arriving=3, series=(SeriesSpec("CT", 8, size=64),),
              modalities=1, doctors=2, patients=1,
              waits={"modality": (0.5, 1.0), "doctor": (0.2, 0.5), "patient": (0.5, 1.0)})
    plan = write_plan(cluster, tmp_path / "load", day, token)
    with watching(cluster) as watch:
        figures = run_locust(cluster, plan, day, 20, tmp_path / "locust")
    assert figures.exit_code == 0, figures.output[-3000:]
    assert figures.failures == 0
    kinds = ("C-STORE study", "QIDO studies by PatientID", "QIDO series of a study",
             "WADO-RS series metadata", "WADO-RS frame (one by one)", "patient ZIP download")
    assert {name: figures.rows.get(name, {}).get("requests", 0) > 0 for name in kinds} == {
        name: True for name in kinds}
    # Every study a modality sent is archived once, however often it was sent.
    sent = figures.rows["C-STORE study"]["requests"]
    rows = cluster.sql("SELECT count(*) FROM imaging_instance i JOIN imaging_series s ON"
                       " s.id = i.series_id JOIN imaging_study t ON t.id = s.study_id JOIN"
                       " imaging_patient p ON p.id = t.patient_id"
                       " WHERE p.patient_id LIKE 'LOAD-%%'")
    assert rows[0][0] == 8 * (2 + min(sent, 3))
    frames = figures.rows["WADO-RS frame (one by one)"]
    assert 0 < max(s["db_connections"] for s in watch.samples) < 100
    print(f"\nload for 20 s: {figures.rows['Aggregated']['requests']:.0f} requests, none "
          f"failed; {sent:.0f} studies stored, {frames['requests']:.0f} frames at p95 "
          f"{frames['p95']:.0f} ms")
