"""Several imports of overlapping sets at the same time end with exact counts (PostgreSQL).

Each object is stored exactly once whichever import gets there first; the others see a
duplicate. No blob is left without its row, and the study and series counters add up.
"""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection, connections

from imaging.ingest import IngestResult, Outcome, ingest
from imaging.models import Instance, Patient, Series, Study
from tests.conftest import stored_files

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

THREADS = 6


@pytest.fixture(autouse=True)
def on_postgresql() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("concurrent ingest is proven on PostgreSQL (set DATABASE_URL)")


@pytest.fixture
def overlapping_sets(
    ct_study: tuple[str, list[Path]], other_study: tuple[str, list[Path]]
) -> list[list[Path]]:
    """Six shuffled sets, each with most of the 16 files of both studies, some twice."""
    everything = ct_study[1] + other_study[1]
    sets = []
    for seed in range(THREADS):
        rng = random.Random(seed)
        chosen = rng.sample(everything, 12) + rng.sample(everything, 4)
        rng.shuffle(chosen)
        sets.append(chosen)
    assert set().union(*sets) == set(everything)
    return sets


def assert_exact_counts(
    study_files: dict[str, list[Path]], dicom_storage: Path
) -> None:
    all_files = [p for files in study_files.values() for p in files]
    assert Instance.objects.count() == len(all_files)
    assert Patient.objects.count() == len(study_files)
    assert sorted(p.name for p in stored_files(dicom_storage)) == sorted(
        Path(key).name for key in Instance.objects.values_list("blob_key", flat=True)
    )
    for study_uid, files in study_files.items():
        study = Study.objects.get(study_instance_uid=study_uid)
        assert study.num_instances == len(files)
        assert study.size_bytes == sum(p.stat().st_size for p in files)
        series = Series.objects.filter(study=study)
        assert study.num_series == series.count()
        for one in series:
            assert one.num_instances == one.instances.count()
            assert one.size_bytes == sum(i.size_bytes for i in one.instances.all())


def test_threads_ingesting_overlapping_sets_at_once_store_each_object_exactly_once(
    overlapping_sets: list[list[Path]],
    ct_study: tuple[str, list[Path]],
    other_study: tuple[str, list[Path]],
    dicom_storage: Path,
):
    start = threading.Barrier(THREADS)
    results: list[list[IngestResult]] = [[] for _ in range(THREADS)]
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            payloads = [p.read_bytes() for p in overlapping_sets[index]]
            start.wait()
            for data in payloads:
                results[index].append(ingest(io.BytesIO(data), source=f"thread:{index}"))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    outcomes = Counter(r.outcome for rs in results for r in rs)
    assert outcomes == {
        Outcome.STORED: 16,
        Outcome.DUPLICATE: sum(map(len, overlapping_sets)) - 16,
    }
    stored_uids = [r.sop_instance_uid for rs in results for r in rs if r.outcome == "stored"]
    assert len(stored_uids) == len(set(stored_uids)) == 16
    assert_exact_counts({ct_study[0]: ct_study[1], other_study[0]: other_study[1]}, dicom_storage)


@pytest.mark.slow
def test_import_commands_run_side_by_side_on_overlapping_folders_end_with_exact_counts(
    overlapping_sets: list[list[Path]],
    ct_study: tuple[str, list[Path]],
    other_study: tuple[str, list[Path]],
    dicom_storage: Path,
    tmp_path: Path,
):
    sets = overlapping_sets[:3]
    assert set().union(*sets) == set(ct_study[1] + other_study[1])
    folders = []
    for index, files in enumerate(sets):
        folder = tmp_path / f"set{index}"
        folder.mkdir()
        for n, path in enumerate(files):
            os.link(path, folder / f"{n:02d}-{path.name}")
        folders.append(folder)
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": (
            f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
        ),
        "DICOM_STORAGE_DIR": str(dicom_storage),
        "DATA_DIR": str(tmp_path / "data"),
    }
    manage = Path(settings.BASE_DIR) / "manage.py"
    connections.close_all()

    commands = [
        subprocess.Popen(
            [sys.executable, str(manage), "import_dicom", str(folder), "--workers=2",
             "--no-progress"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for folder in folders
    ]
    finished = [command.communicate(timeout=180) for command in commands]

    assert [command.returncode for command in commands] == [0] * len(commands), finished
    summed = Counter[str]()
    for out, _ in finished:
        numbers = out.strip().split(": ", 1)[1].split(", ")
        for part in numbers:
            count, what = part.split(" ")
            summed[what] += int(count)
    assert summed["stored"] == 16
    assert summed["duplicate"] == sum(map(len, sets)) - 16
    assert summed["conflict"] == summed["rejected"] == 0
    assert_exact_counts({ct_study[0]: ct_study[1], other_study[0]: other_study[1]}, dicom_storage)
