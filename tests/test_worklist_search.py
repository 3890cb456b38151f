"""The worklist's search (imaging.worklist): what each filter finds, in which order, a page
at a time, and never more than the access policy lets the caller see.

The archive here is rows, as ingest leaves them (ingest's own part is at the end): three
patients of Clínica Sul and one of Clínica Norte.
"""

from __future__ import annotations

import datetime
import importlib
from typing import Any

import pytest
from django.apps import apps

from accounts.models import AccessGrant, Clinic
from imaging import worklist
from imaging.models import Patient, ReportStatus, Study
from imaging.principals import as_principal

from .conftest import CHARLIE, PAULA, ingest_paths

D = datetime.date


def _study(patient: Patient, accession: str, date: D | None, modalities: str = "CT",
           body_parts: str = "", referring: str = "", status: str = ReportStatus.NONE,
           time: str = "100000") -> Study:
    return Study.objects.create(
        study_instance_uid=f"1.2.3.{accession}", patient=patient, study_date=date,
        study_time=time, accession_number=accession, description=f"exam {accession}",
        modalities=modalities, body_parts=body_parts, referring_physician=referring,
        report_status=status,
    )


@pytest.fixture
def norte(db) -> Clinic:
    return Clinic.objects.get_or_create(name="Clínica Norte")[0]


@pytest.fixture
def archive(clinic, norte) -> dict[str, Patient]:
    jose = Patient.objects.create(patient_id="SUL-1", name="JOSÉ^DA SILVA", clinic=clinic)
    maria = Patient.objects.create(patient_id="SUL-2", name="Conceição^Maria", clinic=clinic)
    joao = Patient.objects.create(patient_id="SUL-10", name="PEREIRA^JOÃO", clinic=clinic)
    ana = Patient.objects.create(patient_id="NORTE-1", name="ARAÚJO^ANA", clinic=norte)
    _study(jose, "ACC-1", D(2024, 5, 10), "CT", "CHEST", "SOUZA^MÁRCIA", ReportStatus.FINAL)
    _study(maria, "ACC-2", D(2023, 1, 15), "MR\\SR", "HEAD", "LIMA^DORA",
           ReportStatus.PRELIMINARY)
    _study(joao, "ACC-3", D(2022, 7, 1), "US", "ABDOMEN\\PELVIS", "SOUZA^MARCIA")
    _study(joao, "ACC-4", None, "DX", "HAND")
    _study(ana, "ACC-5", D(2024, 1, 1), "CT", "KNEE", "COSTA^PEDRO", ReportStatus.FINAL)
    return {"jose": jose, "maria": maria, "joao": joao, "ana": ana}


def found(user: Any, **params: str) -> list[str]:
    """The accession numbers ``user``'s search finds, in the order shown."""
    principal = as_principal(user)
    query = worklist.parse(params, clinics=worklist.clinic_choices(principal))
    return [s.accession_number for s in worklist.search(principal, query).studies]


# --- each filter --------------------------------------------------------------------------


@pytest.mark.parametrize("typed", ["jose", "José", "JOSE", "silva", "Silva José", "da sil"])
def test_any_part_of_the_patient_name_finds_the_patient_whatever_its_accents_and_case(
        alice, archive, typed):
    assert found(alice, name=typed) == ["ACC-1"]


def test_the_carets_between_dicom_name_components_count_as_spaces(alice, archive):
    assert found(alice, name="jose da silva") == ["ACC-1"]
    assert found(alice, name="conceicao maria") == ["ACC-2"]
    assert found(alice, name="^") == found(alice)  # a caret alone asks for nothing


def test_a_typed_accent_finds_the_unaccented_spelling_too(alice, archive):
    assert found(alice, name="joão") == ["ACC-3", "ACC-4"]
    assert found(alice, name="ARAUJO") == ["ACC-5"]


def test_a_name_that_is_nobodys_finds_nothing(alice, archive):
    assert found(alice, name="silveira") == []


def test_the_patient_id_matches_exactly(alice, archive):
    assert found(alice, patient_id="SUL-1") == ["ACC-1"]  # not SUL-10
    assert found(alice, patient_id="SUL") == []


def test_the_accession_number_matches_exactly(alice, archive):
    assert found(alice, accession="ACC-2") == ["ACC-2"]
    assert found(alice, accession="ACC") == []


def test_the_quick_box_finds_a_name_part_a_patient_id_or_an_accession(alice, archive):
    assert found(alice, q="conceicao") == ["ACC-2"]
    assert found(alice, q="SUL-10") == ["ACC-3", "ACC-4"]
    assert found(alice, q="ACC-5") == ["ACC-5"]


def test_a_date_range_includes_both_of_its_days_and_leaves_undated_studies_out(alice,
                                                                             archive):
    assert found(alice, date_from="2023-01-15", date_to="2024-01-01") == ["ACC-5", "ACC-2"]
    assert found(alice, date_from="2024-01-02") == ["ACC-1"]
    assert found(alice, date_to="2022-12-31") == ["ACC-3"]


def test_a_modality_matches_any_one_of_the_studys_modalities(alice, archive):
    assert found(alice, modality="SR") == ["ACC-2"]
    assert found(alice, modality="MR") == ["ACC-2"]
    assert found(alice, modality="ct") == ["ACC-1", "ACC-5"]
    assert found(alice, modality="R") == []  # a whole modality, not a part of one


def test_a_body_part_matches_any_one_of_the_studys_series_body_parts(alice, archive):
    assert found(alice, body_part="PELVIS") == ["ACC-3"]
    assert found(alice, body_part="abdomen") == ["ACC-3"]
    assert found(alice, body_part="CHES") == []


def test_the_referring_physician_matches_on_any_part_without_accents(alice, archive):
    assert found(alice, referring="marcia") == ["ACC-1", "ACC-3"]
    assert found(alice, referring="Dora Lima") == ["ACC-2"]


def test_a_clinic_narrows_to_its_patients(alice, archive, clinic, norte):
    assert found(alice, clinic=str(norte.pk)) == ["ACC-5"]
    assert found(alice, clinic=str(clinic.pk)) == ["ACC-1", "ACC-2", "ACC-3", "ACC-4"]


@pytest.mark.parametrize(("status", "expected"), [
    ("none", ["ACC-3", "ACC-4"]), ("preliminary", ["ACC-2"]), ("final", ["ACC-1", "ACC-5"]),
])
def test_the_report_status_finds_studies_without_report_with_a_preliminary_or_a_final_one(
        alice, archive, status, expected):
    assert found(alice, report_status=status) == expected


def test_filters_combine_each_narrowing_the_others(alice, archive):
    assert found(alice, modality="CT", report_status="final") == ["ACC-1", "ACC-5"]
    assert found(alice, modality="CT", report_status="final", name="ana") == ["ACC-5"]
    assert found(alice, modality="CT", report_status="final", date_to="2023-12-31") == []


# --- order ---------------------------------------------------------------------------------


def test_newest_studies_come_first_and_undated_ones_last(alice, archive):
    assert found(alice) == ["ACC-1", "ACC-5", "ACC-2", "ACC-3", "ACC-4"]


def test_oldest_first_puts_undated_studies_first(alice, archive):
    assert found(alice, sort="date") == ["ACC-4", "ACC-3", "ACC-2", "ACC-5", "ACC-1"]


def test_patient_names_sort_alphabetically_ignoring_accents_and_case(alice, archive):
    # ARAÚJO, Conceição, JOSÉ, PEREIRA (each patient's studies by primary key)
    assert found(alice, sort="name") == ["ACC-5", "ACC-2", "ACC-1", "ACC-3", "ACC-4"]
    assert found(alice, sort="-name") == ["ACC-4", "ACC-3", "ACC-1", "ACC-2", "ACC-5"]


def test_patient_ids_accessions_and_modalities_sort_too(alice, archive):
    assert found(alice, sort="patient_id") == ["ACC-5", "ACC-1", "ACC-3", "ACC-4", "ACC-2"]
    assert found(alice, sort="-accession") == ["ACC-5", "ACC-4", "ACC-3", "ACC-2", "ACC-1"]
    assert found(alice, sort="modality") == ["ACC-1", "ACC-5", "ACC-4", "ACC-2", "ACC-3"]


def test_studies_that_sort_alike_keep_a_stable_order_by_when_they_were_stored(alice,
                                                                            archive):
    twins = [_study(archive["ana"], f"TWIN-{n}", D(2025, 2, 2)) for n in range(3)]
    assert found(alice, date_from="2025-01-01") == ["TWIN-2", "TWIN-1", "TWIN-0"]
    assert found(alice, date_from="2025-01-01", sort="date") == [
        t.accession_number for t in twins]


# --- pages ---------------------------------------------------------------------------------


@pytest.fixture
def many(clinic) -> None:
    """120 CT studies of one patient, a day apart, and 10 MR ones."""
    patient = Patient.objects.create(patient_id="MANY", name="SANTOS^MUITOS", clinic=clinic)
    for n in range(120):
        _study(patient, f"CT-{n:03}", D(2020, 1, 1) + datetime.timedelta(days=n))
    for n in range(10):
        _study(patient, f"MR-{n:03}", D(2019, 1, 1), modalities="MR")


def _page(user: Any, **params: str) -> worklist.WorklistPage:
    principal = as_principal(user)
    return worklist.search(principal, worklist.parse(params, clinics={}))


def test_a_page_holds_fifty_studies_and_says_whether_another_follows(alice, many):
    first, second, third = (_page(alice, modality="CT", page=str(n)) for n in (1, 2, 3))
    assert [len(p.studies) for p in (first, second, third)] == [50, 50, 20]
    assert first.has_next and second.has_next and not third.has_next
    assert not first.has_previous and third.has_previous
    assert first.count == 120 and first.pages == 3 and not first.capped
    assert first.studies[0].accession_number == "CT-119"
    assert third.studies[-1].accession_number == "CT-000"
    seen = [s.pk for p in (first, second, third) for s in p.studies]
    assert len(set(seen)) == 120


def test_a_page_past_the_last_shows_the_last(alice, many):
    page = _page(alice, modality="MR", page="9")
    assert page.number == 1 and len(page.studies) == 10


def test_the_count_stops_at_its_cap_and_says_there_are_more(alice, many, monkeypatch):
    monkeypatch.setattr(worklist, "COUNT_CAP", 100)
    page = _page(alice, modality="CT")
    assert page.capped and page.count == 100
    assert len(_page(alice, modality="CT", page="3").studies) == 20  # pages still go on


# --- the access policy ---------------------------------------------------------------------


def test_a_doctor_finds_only_the_patients_she_holds_a_grant_for(dora, archive, clinic):
    assert found(dora) == []
    AccessGrant.objects.create(doctor=dora, patient=archive["maria"], clinic=clinic)
    assert found(dora) == ["ACC-2"]
    assert found(dora, name="jose") == []
    assert found(dora, modality="SR") == ["ACC-2"]


def test_a_doctor_may_narrow_only_to_her_own_clinics(dora, archive, clinic, norte):
    assert worklist.clinic_choices(as_principal(dora)) == {clinic.pk: clinic.name}
    with pytest.raises(worklist.BadQuery):
        found(dora, clinic=str(norte.pk))


def test_a_clinic_admin_finds_only_her_clinics_patients(olga, archive, norte):
    assert found(olga) == ["ACC-5"]
    assert found(olga, name="jose") == []
    assert found(olga, patient_id="SUL-1") == []
    assert worklist.clinic_choices(as_principal(olga)) == {norte.pk: norte.name}


def test_a_patient_searching_the_worklist_finds_only_her_own_studies(paula, archive):
    own = Patient.objects.create(patient_id="PAULA-9", name="PEREIRA^PAULA", user=paula)
    _study(own, "ACC-PAULA", D(2021, 3, 3))
    assert found(paula) == ["ACC-PAULA"]
    assert found(paula, name="pereira") == ["ACC-PAULA"]  # not João Pereira
    assert found(paula, accession="ACC-1") == []
    assert worklist.clinic_choices(as_principal(paula)) == {}


# --- keeping the search columns --------------------------------------------------------------


def test_ingest_writes_the_searchable_name_and_the_studys_body_parts(alice, ct_study,
                                                                      other_study):
    ingest_paths(ct_study[1] + other_study[1])
    assert Patient.objects.get(patient_id=PAULA.patient_id).name_search == "PEREIRA PAULA"
    charlies = Study.objects.get(patient__patient_id=CHARLIE.patient_id)
    assert charlies.body_parts == "HEAD"
    assert found(alice, name="costa", body_part="head") == [charlies.accession_number]


def test_saving_a_renamed_patient_renames_its_searchable_name(alice, archive):
    ana = archive["ana"]
    ana.name = "ÁVILA^ANA"
    ana.save()
    assert found(alice, name="avila") == ["ACC-5"]


def test_the_migration_fills_the_search_columns_of_rows_stored_before_it(alice, archive):
    Patient.objects.update(name_search="")
    Study.objects.update(referring_physician_search="", body_parts="")
    from imaging.models import Series

    Series.objects.create(series_instance_uid="1.2.3.ACC-5.1", study=Study.objects.get(
        accession_number="ACC-5"), modality="CT", body_part="knee")
    migration = importlib.import_module("imaging.migrations.0006_worklist_search_fill")
    migration.fill(apps, None)
    assert found(alice, name="araujo", referring="costa", body_part="KNEE") == ["ACC-5"]
    assert Study.objects.get(accession_number="ACC-1").body_parts == ""  # has no series
