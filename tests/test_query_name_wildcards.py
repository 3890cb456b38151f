"""Person-name wildcards with a leading ``*`` (QIDO-RS ``PatientName=*silva*``, C-FIND
``*SILVA*``) match inside the name, in any case, and on PostgreSQL the search can be
answered from the trigram index on ``UPPER(name)`` instead of reading every patient."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from imaging.models import Patient, Study
from imaging.query import find

pytestmark = pytest.mark.django_db


@pytest.fixture
def patients() -> dict[str, str]:
    names = {"joao": "SILVA SANTOS^JOÃO", "maria": "Pereira^Maria da Silva",
             "caio": "GUSMÃO^CAIO", "ines": "LIMA^INÊS"}
    for n, name in enumerate(names.values()):
        patient = Patient.objects.create(patient_id=f"P{n}", name=name)
        Study.objects.create(study_instance_uid=f"1.2.3.{n}", patient=patient)
    return {f"1.2.3.{n}": key for n, key in enumerate(names)}


def found(patients: dict[str, str], value: str) -> set[str]:
    query = find("study", [("PatientName", value)], studies=Study.objects.all())
    return {patients[s.study_instance_uid] for s in query.queryset}


@pytest.mark.parametrize(("value", "expected"), [
    ("*silva*", {"joao", "maria"}),
    ("*SILVA*", {"joao", "maria"}),
    ("*silva", {"maria"}),
    ("*^jo?o", {"joao"}),
    ("*GUSMÃO*", {"caio"}),
    ("*gusmao*", set()),  # wildcards match the letters as stored, accents included
    ("*^ca*", {"caio"}),
    ("*", {"joao", "maria", "caio", "ines"}),
])
def test_a_leading_wildcard_matches_inside_the_name_in_any_case(patients, value, expected):
    assert found(patients, value) == expected


def test_a_leading_wildcard_finds_its_patients_through_the_trigram_index(patients):
    if connection.vendor != "postgresql":
        pytest.skip("the trigram index is PostgreSQL's")
    with CaptureQueriesContext(connection) as queries:
        query = find("study", [("PatientName", "*silva*")], studies=Study.objects.all())
    lookups = [q["sql"] for q in queries.captured_queries if 'FROM "imaging_patient"' in q["sql"]]
    assert len(lookups) == 1, queries.captured_queries
    with connection.cursor() as cursor:
        # Four rows would be read whole anyway: forbid that, to see whether the index can
        # answer the condition as the lookup writes it.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {lookups[0]}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "imaging_patient_name_upper_trgm" in plan, plan
    # The studies are then those of the patients found, by key.
    assert 'patient_id" IN (' in str(query.queryset.query)
