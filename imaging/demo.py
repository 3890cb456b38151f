"""Demo data: a clinic with patients, each with a current and a year-older prior study.

The images are synthetic (``imaging.synthetic``) but reach the archive the way real ones do:
written as Part 10 files and stored through :func:`imaging.ingest.ingest`, never as rows
made here. UIDs are derived from the patient and the study, so the data can be recognised
on a later run (nothing is added twice) and an interrupted run resumes where it stopped:
objects already stored come back from ingest as duplicates.
"""

from __future__ import annotations

import datetime
import secrets
import string
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.db import transaction
from django.utils import timezone
from pydicom.dataset import Dataset
from pydicom.uid import UID, generate_uid

from accounts.models import AccessGrant, Clinic, Role, User

from .ingest import IngestResult, Outcome, ingest
from .models import Patient, Study
from .synthetic import ROOT, PatientSpec, SeriesSpec, series_datasets

ISSUER = "DEMO"  # imaging.synthetic writes IssuerOfPatientID "DEMO"
CLINIC = "Clínica Demonstração"  # and this InstitutionName
PRIOR_GAP = datetime.timedelta(days=365)


@dataclass(frozen=True)
class SeriesPlan:
    modality: str
    body_part: str
    description: str


@dataclass(frozen=True)
class DemoPatient:
    spec: PatientSpec
    study_description: str
    series: tuple[SeriesPlan, ...]
    days_ago: int  # the current study's age


PATIENTS: tuple[DemoPatient, ...] = (
    DemoPatient(
        PatientSpec("DEMO-0001", "Silva^Ana Beatriz", datetime.date(1968, 3, 14), "F"),
        "TC tórax",
        (SeriesPlan("CT", "CHEST", "Tórax axial 2,5 mm"),
         SeriesPlan("CT", "CHEST", "Tórax mediastino")),
        days_ago=3,
    ),
    DemoPatient(
        PatientSpec("DEMO-0002", "Santos^João Pedro", datetime.date(1955, 11, 2), "M"),
        "TC abdome total",
        (SeriesPlan("CT", "ABDOMEN", "Abdome sem contraste"),
         SeriesPlan("CT", "ABDOMEN", "Abdome fase portal")),
        days_ago=10,
    ),
    DemoPatient(  # a minor: guardians, retention until adulthood and beyond
        PatientSpec("DEMO-0003", "Oliveira^Maria Eduarda", datetime.date(2015, 7, 21), "F"),
        "RM crânio",
        (SeriesPlan("MR", "HEAD", "Axial T1"), SeriesPlan("MR", "HEAD", "Axial T2")),
        days_ago=21,
    ),
    DemoPatient(
        PatientSpec("DEMO-0004", "Ferreira^Carlos Henrique", datetime.date(1979, 1, 30), "M"),
        "RM coluna lombar",
        (SeriesPlan("MR", "LSPINE", "Sagital T2"), SeriesPlan("MR", "LSPINE", "Axial T2")),
        days_ago=35,
    ),
    DemoPatient(
        PatientSpec("DEMO-0005", "Rodrigues^Luíza", datetime.date(1990, 9, 8), "F"),
        "TC e RM crânio",
        (SeriesPlan("CT", "HEAD", "Crânio axial"), SeriesPlan("MR", "HEAD", "Crânio FLAIR")),
        days_ago=60,
    ),
)


@dataclass(frozen=True)
class DemoUser:
    username: str
    role: Role
    first_name: str
    last_name: str


DOCTOR = DemoUser("dra.marina", Role.DOCTOR, "Marina", "Souza")
DOCTOR_CRM = "CRM-SP 000000"  # made up, as every demo name is
TECHNICIAN = DemoUser("tec.rafael", Role.TECHNICIAN, "Rafael", "Lima")
PATIENT_USER = DemoUser("ana.silva", Role.PATIENT, "Ana Beatriz", "Silva")
PORTAL_PATIENT_ID = "DEMO-0001"  # whose records PATIENT_USER sees
# The doctor has a care relationship with every demo patient but this one, so the
# break-the-glass path can be shown.
NO_GRANT_PATIENT_ID = "DEMO-0005"


@dataclass(frozen=True)
class Options:
    patients: int = 5
    slices: int = 24
    size: int = 192


@dataclass
class DemoReport:
    studies_added: int = 0
    studies_resumed: int = 0
    studies_present: int = 0
    outcomes: Counter[Outcome] = field(default_factory=Counter)
    problems: list[IngestResult] = field(default_factory=list)
    # username -> (role, password set by this run)
    users: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def nothing_added(self) -> bool:
        return not self.studies_added and not self.studies_resumed


@dataclass(frozen=True)
class _PlannedStudy:
    patient: DemoPatient
    kind: str  # "current" or "prior"
    study_uid: str
    accession: str
    description: str
    study_date: datetime.date
    expected: int
    stored: int  # instances already in the archive
    seed: int

    @property
    def complete(self) -> bool:
        return self.stored >= self.expected


def _uid(*parts: object) -> str:
    return generate_uid(ROOT, entropy_srcs=["imaging-portal-demo", *map(str, parts)])


def demo_patients() -> list[Patient]:
    ids = [p.spec.patient_id for p in PATIENTS]
    return list(Patient.objects.filter(issuer=ISSUER, patient_id__in=ids))


def _plan(options: Options, today: datetime.date) -> list[_PlannedStudy]:
    plans: list[_PlannedStudy] = []
    for number, patient in enumerate(PATIENTS[: options.patients], start=1):
        uids = {kind: _uid(patient.spec.patient_id, kind) for kind in ("current", "prior")}
        stored = {
            row.study_instance_uid: row
            for row in Study.objects.filter(study_instance_uid__in=uids.values())
        }
        # Dates come from what is stored, so a resumed study gets identical bytes.
        current = stored.get(uids["current"])
        current_date = (
            current.study_date if current and current.study_date
            else today - datetime.timedelta(days=patient.days_ago)
        )
        prior = stored.get(uids["prior"])
        prior_date = prior.study_date if prior and prior.study_date else current_date - PRIOR_GAP
        expected = options.slices * len(patient.series)
        for kind, date in (("current", current_date), ("prior", prior_date)):
            row = stored.get(uids[kind])
            plans.append(_PlannedStudy(
                patient=patient,
                kind=kind,
                study_uid=uids[kind],
                accession=f"D{number:03d}{date:%Y%m%d}",
                description=patient.study_description,
                study_date=date,
                expected=expected,
                stored=row.num_instances if row else 0,
                seed=number * 10 + (0 if kind == "current" else 1),
            ))
    return plans


def _datasets(study: _PlannedStudy, options: Options) -> Iterator[Dataset]:
    for number, series in enumerate(study.patient.series, start=1):
        spec = SeriesSpec(series.modality, options.slices, size=options.size,
                          description=series.description, body_part=series.body_part)
        series_uid = _uid(study.study_uid, number)
        frame_of_reference = _uid(study.study_uid, number, "frame")
        for index, ds in enumerate(series_datasets(
            study.patient.spec, spec, study_uid=study.study_uid, study_date=study.study_date,
            accession=study.accession, study_description=study.description,
            series_number=number, seed=study.seed,
        )):
            sop_uid = _uid(series_uid, index)
            ds.SeriesInstanceUID = series_uid
            ds.FrameOfReferenceUID = frame_of_reference
            ds.SOPInstanceUID = sop_uid
            ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_uid)
            yield ds


def pending_instances(options: Options | None = None) -> int:
    """How many objects :func:`make_demo_data` would generate (for a progress bar)."""
    options = options or Options()
    return sum(
        s.expected for s in _plan(options, timezone.localdate()) if not s.complete
    )


def make_demo_data(
    options: Options | None = None, *, progress: Callable[[int], object] | None = None
) -> DemoReport:
    """Store the demo patients' studies (those not yet complete) and set up the demo users.

    ``progress`` is called with the number of objects handled since its last call.
    """
    options = options or Options()
    report = DemoReport()
    with tempfile.TemporaryDirectory(prefix="demo-dicom-") as tmp:
        folder = Path(tmp)
        for study in _plan(options, timezone.localdate()):
            if study.complete:
                report.studies_present += 1
                continue
            if study.stored:
                report.studies_resumed += 1
            else:
                report.studies_added += 1
            for ds in _datasets(study, options):
                path = folder / "object.dcm"
                ds.save_as(path, enforce_file_format=True)
                with path.open("rb") as fp:
                    result = ingest(fp, source="demo:make_demo_data")
                path.unlink()
                report.outcomes[result.outcome] += 1
                if not result.accepted:
                    report.problems.append(result)
                if progress is not None:
                    progress(1)
    report.users = _demo_users(options)
    return report


def _password() -> str:
    # Letters and digits only, so it copies with a double-click from a terminal.
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(16))


def _demo_users(options: Options) -> dict[str, tuple[str, str]]:
    """The clinic, its doctor, technician and one patient's portal account.

    Each run gives them fresh random passwords, returned so the caller can show them; no
    password is ever part of the code.
    """
    passwords: dict[str, tuple[str, str]] = {}
    with transaction.atomic():
        clinic, _ = Clinic.objects.get_or_create(name=CLINIC)
        patients = {p.patient_id: p for p in demo_patients()}
        Patient.objects.filter(pk__in=[p.pk for p in patients.values()], clinic=None).update(
            clinic=clinic
        )
        for demo in (DOCTOR, TECHNICIAN, PATIENT_USER):
            user, _ = User.objects.get_or_create(
                username=demo.username,
                defaults={"role": demo.role, "first_name": demo.first_name,
                          "last_name": demo.last_name,
                          "email": f"{demo.username}@demo.invalid",
                          "professional_id": DOCTOR_CRM if demo is DOCTOR else ""},
            )
            password = _password()
            user.set_password(password)
            user.save(update_fields=["password"])
            passwords[user.username] = (str(user.role), password)
            if demo.role != Role.PATIENT:
                user.clinics.add(clinic)
            if demo is DOCTOR:
                for patient_id, patient in patients.items():
                    if patient_id == NO_GRANT_PATIENT_ID:
                        continue
                    AccessGrant.objects.get_or_create(
                        doctor=user, patient=patient, clinic=clinic,
                        kind=AccessGrant.Kind.CARE, ends=None,
                        defaults={"reason": "demo: patient of this doctor"},
                    )
            if demo is PATIENT_USER and PORTAL_PATIENT_ID in patients:
                Patient.objects.filter(pk=patients[PORTAL_PATIENT_ID].pk, user=None).update(
                    user=user
                )
    return passwords


def reset_admin(username: str = "admin") -> str:
    """Make sure the superuser ``username`` exists and give it a fresh random password.

    Returns the password; it is never stored anywhere but as the user's hash. Clears a
    lockout of that username, so the printed login works.
    """
    from axes.utils import reset

    password = _password()
    user, _ = User.objects.get_or_create(
        username=username, defaults={"email": f"{username}@demo.invalid"}
    )
    user.role = Role.ADMIN
    user.is_staff = user.is_superuser = user.is_active = True
    user.set_password(password)
    user.save()
    reset(username=username)
    return password
