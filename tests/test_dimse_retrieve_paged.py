"""A C-GET or C-MOVE holds its matches' primary keys only and reads the rest a page at a
time as the sub-operations reach them, so a study of many objects is not held as a record
per object for the whole retrieve: every object still goes, in the retrieve's order, and one
removed once matched is left out rather than failing the others."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from dimse import retrieve
from imaging.models import Instance
from tests.conftest import ingest_paths

pytestmark = pytest.mark.django_db(transaction=True)

STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"


@pytest.fixture
def study(transactional_db, ct_study):
    ingest_paths(ct_study[1])
    return ct_study[0]


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retrieve, "PAGE_SIZE", 5)  # 12 instances: pages of 5, 5 and 2


def _matching(study_uid: str):
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study_uid
    return retrieve.matching_instances(identifier, STUDY_ROOT_GET)


def test_every_match_is_sent_in_the_retrieve_order_a_page_at_a_time(study, small_pages):
    instances = _matching(study)
    matches = retrieve.stored(instances)
    assert len(matches) == 12
    assert [m.sop_instance_uid for m in matches] == list(
        instances.values_list("sop_instance_uid", flat=True))
    assert {m.study_instance_uid for m in matches} == {study}


def test_an_instance_removed_once_matched_is_left_out_and_the_rest_still_go(study, small_pages):
    instances = _matching(study)
    matches = retrieve.stored(instances)
    order = list(instances.values_list("sop_instance_uid", flat=True))
    Instance.objects.filter(sop_instance_uid=order[7]).delete()
    assert [m.sop_instance_uid for m in matches] == order[:7] + order[8:]
