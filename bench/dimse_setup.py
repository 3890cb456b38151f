"""C-ECHO and C-FIND with association set-up, sample by sample in turn: Orthanc, the portal
at this checkout and, with ``--before COMMIT``, the portal at another commit, on SQLite
and PostgreSQL.

    .venv/bin/python bench/dimse_setup.py [--samples 30] [--before 14da487] [--no-postgres]

bench/dimse.py measures these once per server, one server after the other; on a shared
machine whose speed moves from one minute to the next, that compares minutes as much as
servers. Here every server is running at once and each sample is taken from each in turn,
so a slow second falls on all of them alike. Same clients (DCMTK, ``TCP_NODELAY=1``, the
client's start-up included), same study (10 CT slices stored first), same servers as
bench/dimse.py (its ``Orthanc`` and ``Portal``); a commit given with ``--before`` is
exported with ``git archive`` into a temporary folder and run with this checkout's
virtualenv.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
# bench/dimse.py, loaded by path: the name ``dimse`` is the listener's package.
_spec = importlib.util.spec_from_file_location("bench_dimse", BENCH / "dimse.py")
assert _spec is not None and _spec.loader is not None
bench: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

from imaging.synthetic import SeriesSpec, write_study  # noqa: E402


def echo(target: Any) -> float:
    return float(bench.run("echoscu", "-aet", bench.CLIENT, "-aec", target.aet, "127.0.0.1",
                           str(target.port)))


def find(target: Any) -> float:
    return float(bench.run(
        "findscu", "-aet", bench.CLIENT, "-aec", target.aet, "-S",
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"PatientID={bench.PATIENT.patient_id}",
        "-k", "StudyInstanceUID", "-k", "StudyDate", "127.0.0.1", str(target.port)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--before", metavar="COMMIT", default="")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--postgres-url", default="postgres://postgres@127.0.0.1:5432")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-dimse-setup-"))
    try:
        trees = {"": bench.REPO}
        if args.before:
            tree = scratch / "before"
            tree.mkdir()
            archive = subprocess.run(["git", "-C", str(bench.REPO), "archive", args.before],
                                     check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
            trees = {f" at {args.before}": tree, "": bench.REPO}
        study = scratch / "study"
        study.mkdir()
        _, files = write_study(study, bench.PATIENT, [SeriesSpec("CT", 10)],
                               study_date=datetime.date(2026, 1, 1), accession="BENCH",
                               description="bench")
        dest = bench.free_port()
        with contextlib.ExitStack() as stack:
            targets = [stack.enter_context(bench.Orthanc(dest))]
            for postgres in ([None] if args.no_postgres else [None, args.postgres_url]):
                for label, tree in trees.items():
                    bench.REPO = tree  # where Portal runs manage.py
                    portal = bench.Portal(scratch, dest, postgres)
                    portal.name += label
                    if postgres:
                        portal.database += f"_{len(targets)}"
                        portal.environ["DATABASE_URL"] = f"{portal.postgres_url}/" \
                                                         f"{portal.database}"
                    targets.append(stack.enter_context(portal))
            for target in targets:
                target.store(files)
            samples: dict[str, dict[str, list[float]]] = {
                t.name: {"echo": [], "find": []} for t in targets}
            for _ in range(args.samples):
                for target in targets:
                    samples[target.name]["echo"].append(echo(target))
                    samples[target.name]["find"].append(find(target))
        orthanc = samples[targets[0].name]
        print(f"\n| {args.samples} samples each, median | C-ECHO | C-FIND |")
        print("|---|---|---|")
        for name, taken in samples.items():
            cells = []
            for what in ("echo", "find"):
                ms = statistics.median(taken[what]) * 1000
                ratio = ms / (statistics.median(orthanc[what]) * 1000)
                cells.append(f"{ms:.1f} ms ({ratio:.2f}x)")
            print(f"| {name} | {' | '.join(cells)} |")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
