"""What the doctors' workspace tests share: paula's history of studies at Clínica Sul, dora
with and without a grant, and a look at the audit entries a request wrote."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from accounts.models import AccessGrant, User
from audit.models import AuditEvent
from imaging.models import Patient, Study
from imaging.synthetic import SeriesSpec, write_study
from tests.conftest import PAULA, archived_record, ingest_paths, story_clinic

# paula's studies besides the CT of the conftest (CT tórax, 2026-03-02, 2 CHEST series).
HISTORY = {
    "ct_chest_2025": ("2025-03-02", "CT", "CHEST", "CT tórax controle"),
    "mr_chest_2025": ("2025-12-02", "MR", "chest ", "RM tórax"),
    "ct_head_2024": ("2024-06-10", "CT", "HEAD", "TC crânio"),
    "mr_knee_2025": ("2025-10-01", "MR", "KNEE", "RM joelho"),
    "ct_chest_later_day": ("2026-03-02", "CT", "CHEST", "CT tórax mesmo dia"),
}


@dataclass(frozen=True)
class History:
    patient: Patient
    current: Study  # the CT of 2026-03-02 (ct_study)
    studies: dict[str, Study]


@pytest.fixture(scope="session")
def history_files(tmp_path_factory) -> dict[str, tuple[str, list[Path]]]:
    folder = tmp_path_factory.mktemp("paulas-history")
    files = {}
    for name, (date, modality, body_part, description) in HISTORY.items():
        files[name] = write_study(
            folder / name, PAULA, [SeriesSpec(modality, 2, size=32, body_part=body_part)],
            study_date=datetime.date.fromisoformat(date), accession=f"ACC-{name}"[:16],
            description=description,
        )
    return files


@pytest.fixture
def history(db, ct_study, history_files) -> History:
    """paula's record at Clínica Sul with six studies; no portal account linked."""
    for _, paths in history_files.values():
        ingest_paths(paths)
    patient = archived_record(ct_study, PAULA.patient_id)
    studies = {name: Study.objects.get(study_instance_uid=uid)
               for name, (uid, _) in history_files.items()}
    return History(patient, Study.objects.get(study_instance_uid=ct_study[0]), studies)


@pytest.fixture
def granted_dora(dora: User, history: History) -> User:
    AccessGrant.objects.create(doctor=dora, patient=history.patient, clinic=story_clinic())
    return dora


@contextmanager
def entries() -> Iterator[list[AuditEvent]]:
    """The audit entries written inside the block, oldest first."""
    found: list[AuditEvent] = []
    last = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first() or 0
    yield found
    found.extend(AuditEvent.objects.filter(seq__gt=last).order_by("seq"))
