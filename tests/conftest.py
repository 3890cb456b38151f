"""Shared fixtures: a private DICOM storage per test, personas, real DICOM files.

Personas follow one story, at Clínica Sul: alice is the platform admin (superuser), tina a
technician and dora a doctor there, paula a patient with records in the archive, and
charlie an outsider patient who must never see paula's exams. olga is the admin of another
clinic (Clínica Norte), who must never see Clínica Sul's patients.
"""

from __future__ import annotations

import datetime
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.conf import settings as django_settings
from django.db import connection

from accounts.models import Clinic, Role, User
from dimse import indexing
from dimse.testing import RunningListener, running_listener
from imaging.ingest import Staged, stage
from imaging.models import Patient
from imaging.synthetic import PatientSpec, SeriesSpec, write_study

PASSWORD = "correct horse battery staple"


def database_url() -> str:
    """The test database (not the configured one) as a URL that a process the test starts
    (a Celery worker, the DICOM listener) reads from its environment."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    assert db["ENGINE"] == "django.db.backends.postgresql", db["ENGINE"]
    auth = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        auth += ":" + quote(db["PASSWORD"], safe="")
    host = db["HOST"] or "localhost"
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgres://{auth}@{host}{port}/{quote(db['NAME'], safe='')}"


@pytest.fixture(scope="session", autouse=True)
def no_stray_database_sessions(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """Before the test database is dropped, end the sessions of threads that outlived their
    test (a listener's association or index thread finishing a moment late); otherwise
    PostgreSQL refuses to drop it and a stale test database is left behind."""
    yield
    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                       " WHERE datname = current_database() AND pid <> pg_backend_pid()")


@pytest.fixture(autouse=True)
def dicom_storage(settings, tmp_path: Path) -> Path:
    """Each test gets an empty blob store on disk (S3 tests override this), and its own
    media folder (exports, cached downloads)."""
    location = tmp_path / "dicom-storage"
    settings.STORAGES = {
        **django_settings.STORAGES,
        "dicom": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(location)},
        },
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "media")},
        },
    }
    settings.DICOM_SPOOL_DIR = tmp_path / "dicom-spool"
    settings.WADO_FRAME_CACHE_DIR = tmp_path / "frame-cache"
    return location


@pytest.fixture
def media_storage(dicom_storage, tmp_path: Path) -> Path:
    """Where the default storage (exports, cached downloads) writes in this test."""
    return tmp_path / "media"


def stored_files(location: Path) -> list[Path]:
    return [p for p in location.rglob("*") if p.is_file()] if location.exists() else []


def _user(username: str, role: Role, **extra: object) -> User:
    return User.objects.create_user(
        username=username, password=PASSWORD, email=f"{username}@example.org", role=role,
        **extra,
    )


@pytest.fixture
def alice(db) -> User:
    return _user("alice", Role.ADMIN, is_staff=True, is_superuser=True)


CLINIC = "Clínica Sul"


def story_clinic() -> Clinic:
    """The clinic the story happens at (paula's and charlie's, tina's and dora's)."""
    return Clinic.objects.get_or_create(name=CLINIC)[0]


@pytest.fixture
def clinic(db) -> Clinic:
    return story_clinic()


@pytest.fixture
def tina(db) -> User:
    user = _user("tina", Role.TECHNICIAN)
    user.clinics.add(story_clinic())
    return user


@pytest.fixture
def dora(db) -> User:
    user = _user("dora", Role.DOCTOR, first_name="Dora", last_name="Lima",
                 professional_id="CRM-RS 12345")
    user.clinics.add(story_clinic())
    return user


@pytest.fixture
def olga(db) -> User:
    """The admin of another clinic: staff, signed in, and still an outsider to paula."""
    from django.contrib.auth.models import Permission

    user = _user("olga", Role.ADMIN, is_staff=True)
    user.clinics.add(Clinic.objects.get_or_create(name="Clínica Norte")[0])
    user.user_permissions.add(*Permission.objects.filter(
        content_type__app_label__in=("imaging", "patients", "privacy", "sharing", "accounts",
                                     "audit")))
    return user


@pytest.fixture
def paula(db) -> User:
    return _user("paula", Role.PATIENT)


@pytest.fixture
def charlie(db) -> User:
    return _user("charlie", Role.PATIENT)


PAULA = PatientSpec("PAULA-001", "Pereira^Paula", datetime.date(1975, 4, 12), "F")
CHARLIE = PatientSpec("CHARLIE-002", "Costa^Charlie", datetime.date(1990, 9, 30), "M")


@pytest.fixture(scope="session")
def ct_study(tmp_path_factory) -> tuple[str, list[Path]]:
    """A small CT study of paula: 2 series of 6 slices, 128x128 (real Part 10 files)."""
    folder = tmp_path_factory.mktemp("ct-study")
    return write_study(
        folder, PAULA, [SeriesSpec("CT", 6, size=128), SeriesSpec("CT", 6, size=128)],
        study_date=datetime.date(2026, 3, 2), accession="ACC-PAULA-1", description="CT tórax",
    )


@pytest.fixture(scope="session")
def other_study(tmp_path_factory) -> tuple[str, list[Path]]:
    """charlie's MR study."""
    folder = tmp_path_factory.mktemp("mr-study")
    return write_study(
        folder, CHARLIE, [SeriesSpec("MR", 4, size=64, body_part="HEAD")],
        study_date=datetime.date(2025, 11, 20), accession="ACC-CHARLIE-1",
        description="RM crânio",
    )


@pytest.fixture(scope="session")
def pydicom_test_files() -> list[Path]:
    """The DICOM files pydicom ships, awkward ones included."""
    from pydicom.data import get_testdata_files

    return sorted(Path(p) for p in get_testdata_files("*") if Path(p).is_file())


@pytest.fixture
def logged_in(client, alice) -> Iterator[object]:
    client.force_login(alice)
    yield client


@pytest.fixture(autouse=True)
def fresh_peer_table() -> None:
    """Each test's listener reads the peer table of its own database: the rows a test
    leaves are flushed without the signals that tell the process's copy (dimse.peers)."""
    from dimse.peers import directory

    directory.invalidate()


@pytest.fixture(autouse=True)
def celery_in_process() -> Iterator[None]:
    """Tasks run in-process unless a test starts a real worker (see test_celery_redis)."""
    from portal.celery import app

    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = before


@pytest.fixture(autouse=True)
def second_factor_off_unless_tested(settings, request) -> None:
    """Most tests sign in with force_login; test_login_security turns TOTP enforcement on."""
    if "two_factor" not in request.keywords:
        settings.REQUIRE_2FA = False


# Fixtures starting a Django server in a process of its own (gunicorn) that tests sign in
# to with a password.
PROCESS_SERVERS = {"gunicorn_server", "limited_server"}


@pytest.fixture(autouse=True)
def fast_password_hashes(settings, request) -> None:
    """Argon2 costs each user, code and PIN made or checked a sixth of a second of CPU,
    most of a typical test's time: tests hash with MD5 unless marked ``argon2`` (as
    test_login_security is) or signing in to a server in its own process, which has the
    production hashers. Argon2 stays listed, so a hash such a server made still verifies."""
    if "argon2" not in request.keywords and not PROCESS_SERVERS & set(request.fixturenames):
        settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher",
                                     *django_settings.PASSWORD_HASHERS]


@pytest.fixture(autouse=True)
def private_cache(settings) -> None:
    """Rate-limit counters and cached layouts never leak from one test into the next."""
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                    "LOCATION": str(uuid.uuid4())},
    }


def ingest_paths(paths: list[Path]) -> None:
    """Store files through the one ingest path, as any entry point would."""
    from imaging.ingest import ingest

    for path in paths:
        with path.open("rb") as fp:
            assert ingest(fp, source="test").accepted


def archived_record(study: tuple[str, list[Path]], patient_id: str) -> Patient:
    """The patient record a study's ingest created, as the clinic has it: no portal account
    yet (tests of access codes start here)."""
    ingest_paths(study[1])
    Patient.objects.filter(patient_id=patient_id).update(clinic=story_clinic())
    return Patient.objects.get(patient_id=patient_id)


def _linked_record(study: tuple[str, list[Path]], patient_id: str, user: User):
    patient = archived_record(study, patient_id)
    patient.user = user
    patient.save()
    return patient


@pytest.fixture
def paulas_record(paula, ct_study):
    """paula's CT study in the archive, her patient record linked to her account."""
    return _linked_record(ct_study, PAULA.patient_id, paula)


@pytest.fixture
def charlies_record(charlie, other_study):
    """charlie's MR study in the archive, linked to his account."""
    return _linked_record(other_study, CHARLIE.patient_id, charlie)


@pytest.fixture
def paulas_study(paulas_record, ct_study):
    from imaging.models import Study

    return Study.objects.get(study_instance_uid=ct_study[0])


@pytest.fixture
def charlies_study(charlies_record, other_study):
    from imaging.models import Study

    return Study.objects.get(study_instance_uid=other_study[0])


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """Debian's headless Chromium driven by Playwright (never a downloaded browser)."""
    if not Path(CHROMIUM).exists():
        pytest.skip("needs Chromium at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def close_and_settle(context: Any, seconds: float = 15.0) -> None:
    """Close a browser context, then wait until the live server has finished the requests
    it still had from it. OHIF keeps fetching in the background; a request still writing
    (its audit entry) when the test's database is flushed deadlocked the flush once."""
    context.close()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(
            thread.name.endswith("(process_request_thread)") and thread.is_alive()
            for thread in threading.enumerate()):
        time.sleep(0.05)


@pytest.fixture
def patched_pynetdicom() -> Iterator[None]:
    """pynetdicom with the listener's patches for one test, as it is again afterwards."""
    from dimse import pynetdicom_patches

    pynetdicom_patches.install()
    yield
    pynetdicom_patches.uninstall()


@pytest.fixture
def unlogged_pynetdicom(monkeypatch: pytest.MonkeyPatch) -> None:
    """No pynetdicom debug handlers, as the listener runs (dimse.pynetdicom_patches.configure):
    they watch every request sent, and a watched C-STORE goes as pynetdicom's own message."""
    from pynetdicom import _config

    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "none")


PATCHED = "patched-pynetdicom"
AS_IS = "pynetdicom-as-is"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Listener tests run on the patched pynetdicom (as the listener runs by default); those
    of modules marked ``pynetdicom_as_is_too`` also on pynetdicom as it is, so the patches
    are shown to change nothing but speed (dimse/pynetdicom_patches.py)."""
    if "portal" not in metafunc.fixturenames:
        return
    modes = [PATCHED]
    if metafunc.definition.get_closest_marker("pynetdicom_as_is_too"):
        modes.append(AS_IS)
    metafunc.parametrize("portal", modes, indirect=True)


@pytest.fixture
def portal(request: pytest.FixtureRequest) -> Iterator[RunningListener]:
    """The portal's DICOM listener on a free loopback port, in a thread of this process,
    on pynetdicom with the listener's patches or as it is (see pytest_generate_tests)."""
    from dimse import pynetdicom_patches

    patched = getattr(request, "param", PATCHED) == PATCHED
    try:
        with running_listener(patches=patched) as running:
            yield running
    finally:
        pynetdicom_patches.uninstall()  # other tests see pynetdicom as it is


def spooled_object(path: Path, tmp_path: Path, calling_ae: str = "MODALITY",
                        pid: int = 999999) -> tuple[Staged, Path]:
    """What a listener process holds between its answer and the index rows, as it would
    leave it if it were killed then: the blob written, the received file in its spool."""
    received = tmp_path / f"received-{path.name}"
    received.write_bytes(path.read_bytes())
    with open(received, "rb") as fp:
        staged = stage(fp, source=f"cstore:{calling_ae}", adopt=received)
    assert isinstance(staged, Staged)
    folder = Path(django_settings.DICOM_SPOOL_DIR) / str(pid)
    folder.mkdir(parents=True, exist_ok=True)
    spooled = folder / indexing._spool_name(calling_ae, staged.key)
    os.link(received, spooled)
    received.unlink()  # pynetdicom's temporary file is gone after the handler
    return staged, spooled


@pytest.fixture
def in_english() -> Iterator[None]:
    """The active language English, for tests that read text the portal translates."""
    from django.utils import translation

    with translation.override("en"):
        yield


@pytest.fixture
def dest_port() -> int:
    """A free port for the retrieving workstation's own storescp (C-MOVE destination)."""
    from dimse.testing import free_port

    return free_port()


@pytest.fixture
def workstation(transactional_db: None, dest_port: int) -> Any:
    """A DICOM workstation that queries and retrieves, receiving C-MOVE results at
    ``dest_port``."""
    from dimse.models import Peer

    return Peer.objects.create(ae_title="DEST", host="127.0.0.1", port=dest_port,
                               may_query=True, may_retrieve=True)
