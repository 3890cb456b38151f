"""``manage.py import_dicom PATH...``: folders, ZIPs and DICOMDIR media, summed up honestly.

The command walks what it is given, hands every file to the one ingest function and prints
one summary line; each refused file is named on stderr with its reason. The number of
worker processes changes how fast, never what ends up stored.
"""

from __future__ import annotations

import datetime
import io
import shutil
import zipfile
from pathlib import Path

import pydicom.data
import pytest
from django.core.management import CommandError, call_command

from imaging.models import Instance, Series, Study
from imaging.synthetic import PatientSpec, SeriesSpec, write_study
from tests.conftest import stored_files

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
DICOMDIR_TESTS = TEST_FILES / "dicomdirtests"


def import_dicom(*args: str | Path, workers: int = 1) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "import_dicom", *map(str, args), "--no-progress", f"--workers={workers}",
        stdout=out, stderr=err,
    )
    return out.getvalue(), err.getvalue()


def summary(stored: int, duplicate: int = 0, conflict: int = 0, rejected: int = 0) -> str:
    total = stored + duplicate + conflict + rejected
    return (
        f"{total} files: {stored} stored, {duplicate} duplicate, {conflict} conflict, "
        f"{rejected} rejected\n"
    )


def _copy(paths: list[Path], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(p, folder / p.name)) for p in paths]


@pytest.mark.django_db
def test_a_folder_of_files_is_imported_and_summed_up_on_stdout(
    ct_study: tuple[str, list[Path]], dicom_storage: Path
):
    study_uid, paths = ct_study

    out, err = import_dicom(paths[0].parent)

    assert out == summary(stored=12)
    assert err == ""
    assert Study.objects.get().study_instance_uid == study_uid
    assert Instance.objects.count() == 12
    assert len(stored_files(dicom_storage)) == 12


@pytest.mark.django_db
def test_nested_folders_are_walked_and_each_refused_file_is_named_with_its_reason(
    ct_study: tuple[str, list[Path]], tmp_path: Path
):
    _, paths = ct_study
    _copy(paths[:4], tmp_path / "a")
    _copy(paths[4:8], tmp_path / "a" / "b")
    _copy(paths[8:], tmp_path / "a" / "b" / "c" / "d")
    notes = tmp_path / "a" / "b" / "notes.txt"
    notes.write_text("not an image\n")
    (tmp_path / "a" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")

    out, err = import_dicom(tmp_path)

    assert out == summary(stored=12, rejected=1)
    assert err == (
        f"rejected: {notes}: not a DICOM file: no DICOM preamble and no dataset found\n"
    )
    assert Instance.objects.count() == 12


@pytest.mark.django_db
def test_importing_the_same_folder_again_stores_nothing_new(
    other_study: tuple[str, list[Path]], dicom_storage: Path
):
    folder = other_study[1][0].parent
    import_dicom(folder)

    out, err = import_dicom(folder)

    assert out == summary(stored=0, duplicate=4)
    assert err == ""
    assert len(stored_files(dicom_storage)) == 4
    assert Study.objects.get().num_instances == 4


@pytest.mark.django_db
def test_a_conflicting_file_is_reported_on_stderr_and_the_original_kept(tmp_path: Path):
    first = _copy([TEST_FILES / "MR_small.dcm"], tmp_path / "first")[0]
    second = _copy([TEST_FILES / "MR_small_bigendian.dcm"], tmp_path / "second")[0]
    import_dicom(first)
    out, err = io.StringIO(), io.StringIO()

    with pytest.raises(CommandError, match="nothing was imported"):
        call_command("import_dicom", str(second), "--no-progress", stdout=out, stderr=err)

    assert out.getvalue() == summary(stored=0, conflict=1)
    assert err.getvalue().startswith(
        f"conflict: {second}: an instance with this SOP Instance UID"
    )
    assert Instance.objects.get().transfer_syntax_uid == "1.2.840.10008.1.2.1"


@pytest.mark.django_db
def test_a_zip_file_is_imported_member_by_member(
    ct_study: tuple[str, list[Path]], tmp_path: Path
):
    _, paths = ct_study
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.mkdir("CT/")
        for i, path in enumerate(paths):
            zf.write(path, f"CT/{'series1' if i < 6 else 'series2'}/{path.name}")
        zf.writestr("__MACOSX/CT/._junk", b"resource fork")
        zf.writestr("CT/DICOMDIR", b"not read: the members are imported directly")
        zf.writestr("README.txt", b"exported by the clinic")

    out, err = import_dicom(archive)

    assert out == summary(stored=12, rejected=1)
    assert err == (
        f"rejected: {archive}!README.txt: not a DICOM file: "
        "no DICOM preamble and no dataset found\n"
    )
    assert {i.source for i in Instance.objects.all()} == {
        f"import:{archive}!CT/{'series1' if i < 6 else 'series2'}/{p.name}"[:128]
        for i, p in enumerate(paths)
    }


@pytest.mark.django_db
def test_a_zip_inside_a_folder_is_opened_too(
    other_study: tuple[str, list[Path]], tmp_path: Path
):
    _, paths = other_study
    (tmp_path / "exports").mkdir()
    with zipfile.ZipFile(tmp_path / "exports" / "mr.ZIP", "w") as zf:
        for path in paths:
            zf.write(path, path.name)

    out, _ = import_dicom(tmp_path)

    assert out == summary(stored=4)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("dicomdir", "instances", "studies"),
    [
        ("DICOMDIR", 31, 6),
        ("DICOMDIR-implicit", 31, 6),
        ("DICOMDIR-bigEnd", 31, 6),
        ("DICOMDIR-nopatient", 31, 6),
        ("TINY_ALPHA/DICOMDIR", 50, 1),
    ],
)
def test_a_dicomdir_imports_exactly_the_files_it_names(
    dicomdir: str, instances: int, studies: int, tmp_path: Path
):
    media = tmp_path / "media"
    shutil.copytree(DICOMDIR_TESTS, media)
    path = media / dicomdir
    if path.name != "DICOMDIR":  # pydicom's variants are named for what is special in them
        path = path.rename(path.with_name("DICOMDIR"))

    out, err = import_dicom(path)

    assert out == summary(stored=instances)
    assert err == ""
    assert Study.objects.count() == studies
    assert all(i.source.startswith(f"import:{media}") for i in Instance.objects.all())


@pytest.mark.django_db
def test_a_dicomdir_naming_a_missing_file_imports_the_rest(tmp_path: Path):
    media = tmp_path / "media"
    shutil.copytree(DICOMDIR_TESTS / "TINY_ALPHA", media)
    missing = media / "PT000000" / "ST000000" / "SE000000" / "IM000007"
    missing.unlink()

    out, err = import_dicom(media / "DICOMDIR")

    assert out == summary(stored=49, rejected=1)
    assert err.startswith(f"rejected: {missing}: cannot read: ")


@pytest.mark.django_db
def test_a_folder_with_a_dicomdir_is_walked_without_the_dicomdir(tmp_path: Path):
    media = tmp_path / "media"
    shutil.copytree(DICOMDIR_TESTS / "TINY_ALPHA", media)

    out, err = import_dicom(media)

    assert out == summary(stored=50, rejected=1)  # the README beside the DICOMDIR
    assert err.startswith(f"rejected: {media / 'README'}: not a DICOM file")


@pytest.mark.django_db
def test_a_missing_path_is_a_command_error_and_nothing_is_imported(
    ct_study: tuple[str, list[Path]], tmp_path: Path
):
    with pytest.raises(CommandError, match="no such file or folder"):
        import_dicom(ct_study[1][0], tmp_path / "nowhere")

    assert not Instance.objects.exists()


@pytest.mark.django_db
def test_a_run_that_imports_nothing_is_a_command_error_after_its_summary(tmp_path: Path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 1000)
    out, err = io.StringIO(), io.StringIO()

    with pytest.raises(CommandError, match="nothing was imported"):
        call_command("import_dicom", str(junk), "--no-progress", stdout=out, stderr=err)

    assert out.getvalue() == summary(stored=0, rejected=1)
    assert err.getvalue().startswith(f"rejected: {junk}: not a DICOM file")


@pytest.mark.django_db
def test_the_progress_bar_is_drawn_on_stderr_and_stdout_keeps_only_the_summary(
    other_study: tuple[str, list[Path]],
):
    out, err = io.StringIO(), io.StringIO()

    call_command("import_dicom", str(other_study[1][0].parent), "--workers=1",
                 stdout=out, stderr=err)

    assert out.getvalue() == summary(stored=4)
    assert "Importing" in err.getvalue()
    assert "100%" in err.getvalue()


@pytest.fixture
def mixed_folder(
    tmp_path: Path, ct_study: tuple[str, list[Path]], other_study: tuple[str, list[Path]]
) -> Path:
    """24 files: 17 new objects, 5 copies, one conflict, one non-DICOM file."""
    folder = tmp_path / "mixed"
    ct = _copy(ct_study[1], folder / "ct")
    _copy(other_study[1], folder / "mr")
    shutil.copy(ct[0], folder / "copy-of-first-ct.dcm")
    shutil.copy(TEST_FILES / "MR_small.dcm", folder / "mr_small.dcm")
    shutil.copy(TEST_FILES / "MR_small_implicit.dcm", folder / "mr_small_implicit.dcm")
    (folder / "report.pdf").write_bytes(b"%PDF-1.4\n" + b"x" * 500)
    with zipfile.ZipFile(folder / "again.zip", "w") as zf:
        for path in other_study[1]:
            zf.write(path, f"again/{path.name}")
    return folder


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("workers", [1, 2])
def test_one_and_two_worker_processes_give_the_same_counts(
    workers: int, mixed_folder: Path, dicom_storage: Path
):
    out, err = import_dicom(mixed_folder, workers=workers)

    assert out == summary(stored=17, duplicate=5, conflict=1, rejected=1)
    assert err.count("\n") == 2
    assert Instance.objects.count() == 17
    assert sorted(p.name for p in stored_files(dicom_storage)) == sorted(
        Path(key).name for key in Instance.objects.values_list("blob_key", flat=True)
    )
    assert sum(s.num_instances for s in Study.objects.all()) == 17
    assert sum(s.num_instances for s in Series.objects.all()) == 17


@pytest.mark.django_db(transaction=True)
def test_worker_processes_read_a_large_zip_without_corrupting_members(tmp_path: Path):
    patient = PatientSpec("ZIP-1", "Zip^Zelia", datetime.date(1970, 7, 7), "F")
    _, paths = write_study(
        tmp_path / "src", patient, [SeriesSpec("CT", 40, size=96)],
        study_date=datetime.date(2026, 5, 5), accession="ACC-ZIP", description="zip",
    )
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in paths:
            zf.write(path, path.name)

    out, err = import_dicom(archive, workers=3)

    assert out == summary(stored=40)
    assert err == ""


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_large_import_refreshes_postgresqls_planner_statistics(monkeypatch, ct_study):
    from django.db import connection

    from imaging.management.commands import import_dicom as command

    if connection.vendor != "postgresql":
        pytest.skip("planner statistics are PostgreSQL's (set DATABASE_URL)")

    def last_analyze() -> object:
        with connection.cursor() as cursor:
            cursor.execute("SELECT last_analyze FROM pg_stat_user_tables "
                           "WHERE relname = 'imaging_instance'")
            return cursor.fetchone()[0]

    before = last_analyze()
    monkeypatch.setattr(command, "ANALYZE_AFTER", len(ct_study[1]))  # "large" for the test
    out, _ = import_dicom(ct_study[1][0].parent)
    assert out.startswith(f"{len(ct_study[1])} files: {len(ct_study[1])} stored")
    assert last_analyze() not in (None, before)
