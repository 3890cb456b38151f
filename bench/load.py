"""A clinic's day in minutes against the multi-node cluster, with Locust; and a soak.

    As root (network namespaces), from the repository root:

    .venv/bin/python bench/load.py                   # 2 web nodes, 120 s
    .venv/bin/python bench/load.py --compare         # then the same with 4 web nodes
    .venv/bin/python bench/load.py --soak 1800       # 30 minutes at a steady rate

Each run gets a fresh cluster (deploy/cluster: PostgreSQL, Redis, moto's S3, web nodes behind
HAProxy, two DICOM listeners behind HAProxy, two workers and a beat, each in its own network
namespace), archives the same synthetic studies, then runs Locust on the client host:
modalities storing studies with storescu, doctors opening studies in OHIF's request pattern,
patients downloading ZIPs (deploy/cluster/locustfile.py). It prints throughput and
p50/p95/p99 per request type, the errors (the run fails unless there are none), the
database's connection count and the CPU each role used. The soak samples every process's
memory, open files and sockets and prints how they moved between its first and last minutes.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploy.cluster.hosts import MORE_WEB_NODES, WEB_NODES, Cluster, api_token, temporary_root
from deploy.cluster.load import Day, Figures, Watch, run_locust, watching, write_plan

ORDER = ("C-STORE study", "QIDO studies by PatientID", "QIDO series of a study",
         "WADO-RS series metadata", "WADO-RS frame (one by one)", "patient ZIP download",
         "Aggregated")
ROLES = {"web": ("web-",), "listeners": ("dicom-",), "workers": ("worker-", "beat"),
         "PostgreSQL": ("postgres",), "Redis": ("redis",), "S3 (moto)": ("s3",),
         "HAProxy": ("lb-",)}


def run(web_nodes: tuple[str, ...], day: Day, seconds: int, out: Path,
        soak_every: float | None = None) -> tuple[Figures, Watch]:
    cluster = Cluster(temporary_root(), web_nodes=web_nodes)
    try:
        cluster.up()
        plan = write_plan(cluster, cluster.root / "load", day, api_token(cluster))
        watched = tuple(cluster.nodes) if soak_every else ()
        with watching(cluster, every=soak_every or 1.0, nodes=watched) as watch:
            figures = run_locust(cluster, plan, day, seconds,
                                 out / f"locust-{len(web_nodes)}-web")
        shutil.copytree(cluster.root / "logs", out / f"logs-{len(web_nodes)}-web",
                        dirs_exist_ok=True)
        return figures, watch
    finally:
        cluster.down()
        shutil.rmtree(cluster.root, ignore_errors=True)


def print_run(title: str, figures: Figures, watch: Watch) -> None:
    print(f"\n{title}")
    print(f"{'request':<28}{'count':>7}{'errors':>7}{'req/s':>8}{'p50 ms':>8}{'p95 ms':>8}"
          f"{'p99 ms':>8}{'MB/s':>7}")
    for name in ORDER:
        row = figures.rows.get(name)
        if row is None:
            continue
        mb = row["bytes"] / 1e6 / watch.seconds
        print(f"{name:<28}{row['requests']:>7.0f}{row['failures']:>7.0f}"
              f"{row['per_second']:>8.1f}{row['p50']:>8.0f}{row['p95']:>8.0f}"
              f"{row['p99']:>8.0f}{mb:>7.1f}")
    connections = [s["db_connections"] for s in watch.samples
                   if s["db_connections"] is not None]
    if connections:
        print(f"database connections: max {max(connections)}, "
              f"median {statistics.median(connections):.0f} (sampled each second)")
    cpu = {role: sum(v for k, v in watch.cpu.items() if k.startswith(prefixes))
           for role, prefixes in ROLES.items()}
    machine = watch.cpu.get("(machine)", 0.0)
    used = ", ".join(f"{role} {100 * seconds / watch.seconds:.0f}%"
                     for role, seconds in cpu.items())
    print(f"CPU over {watch.seconds:.0f} s, % of one core: {used}; the whole machine "
          f"{100 * machine / watch.seconds:.0f}% of {os.cpu_count() or 1} cores (Locust and "
          f"storescu are the rest)")


def print_compare(runs: dict[int, Figures]) -> None:
    nodes = sorted(runs)
    print("\nscaling: the same day with more web nodes")
    print(f"{'request':<28}" + "".join(f"{f'{n} web req/s':>14}{f'{n} web p95':>12}"
                                       for n in nodes))
    for name in ORDER:
        if not all(name in runs[n].rows for n in nodes):
            continue
        print(f"{name:<28}" + "".join(
            f"{runs[n].rows[name]['per_second']:>14.1f}{runs[n].rows[name]['p95']:>12.0f}"
            for n in nodes))


def print_soak(watch: Watch, out: Path, warmup: float) -> None:
    """Per node: memory, open files and sockets after the warm-up and at the end."""
    samples = [s for s in watch.samples if s["t"] >= warmup]
    with (out / "soak.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["t", "node", "rss", "files", "sockets", "db_connections"])
        for s in watch.samples:
            for name, value in s.items():
                if isinstance(value, dict):
                    writer.writerow([s["t"], name, value["rss"], value["files"],
                                     value["sockets"], s["db_connections"]])
    if len(samples) < 4:
        print("soak too short to compare its start with its end")
        return
    window = max(len(samples) // 6, 2)
    first, last = samples[:window], samples[-window:]
    print(f"\nsoak: {watch.seconds / 60:.0f} minutes; medians of the first and last "
          f"{window} samples after a {warmup:.0f} s warm-up (every sample in {out}/soak.csv)")
    print(f"{'node':<12}{'RSS MB first':>13}{'last':>8}{'change':>8}{'files':>8}{'last':>6}"
          f"{'sockets':>9}{'last':>6}")
    nodes = [k for k, v in samples[0].items() if isinstance(v, dict)]
    for name in nodes:
        def median(part: list[dict], key: str, name: str = name) -> float:
            return statistics.median(s[name][key] for s in part if name in s)
        rss0, rss1 = median(first, "rss") / 1e6, median(last, "rss") / 1e6
        change = 100 * (rss1 - rss0) / rss0 if rss0 else 0.0
        print(f"{name:<12}{rss0:>13.0f}{rss1:>8.0f}{change:>+7.1f}%"
              f"{median(first, 'files'):>8.0f}{median(last, 'files'):>6.0f}"
              f"{median(first, 'sockets'):>9.0f}{median(last, 'sockets'):>6.0f}")
    db0 = statistics.median(s["db_connections"] or 0 for s in first)
    db1 = statistics.median(s["db_connections"] or 0 for s in last)
    print(f"database connections: {db0:.0f} first, {db1:.0f} last")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--compare", action="store_true",
                        help="run again with twice the web nodes")
    parser.add_argument("--soak", type=int, metavar="SECONDS",
                        help="one long run at the same steady rate, sampling every process")
    parser.add_argument("--soak-every", type=float, default=15.0)
    parser.add_argument("--doctors", type=int, default=Day.doctors)
    parser.add_argument("--modalities", type=int, default=Day.modalities)
    parser.add_argument("--patients", type=int, default=Day.patients)
    parser.add_argument("--out", type=Path, help="folder for Locust's CSV files and logs")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="portal-load-"))
    out.mkdir(parents=True, exist_ok=True)
    day = Day(doctors=args.doctors, modalities=args.modalities, patients=args.patients)
    who = (f"{day.users} users ({day.modalities} modalities, {day.doctors} doctors, "
           f"{day.patients} patients)")
    if args.soak:
        figures, watch = run(WEB_NODES, day, args.soak, out, soak_every=args.soak_every)
        print_run(f"soak: {len(WEB_NODES)} web nodes, {who}, {args.soak} s", figures, watch)
        print_soak(watch, out, warmup=min(300.0, args.soak / 5))
        return 0 if figures.exit_code == 0 and figures.failures == 0 else 1
    runs = {}
    for nodes in (WEB_NODES, WEB_NODES + MORE_WEB_NODES) if args.compare else (WEB_NODES,):
        figures, watch = run(nodes, day, args.seconds, out)
        print_run(f"load: {len(nodes)} web nodes, {who}, {args.seconds} s", figures, watch)
        runs[len(nodes)] = figures
    if args.compare:
        print_compare(runs)
    print(f"\nLocust's CSV files and the nodes' logs: {out}")
    return 0 if all(f.exit_code == 0 and f.failures == 0 for f in runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
