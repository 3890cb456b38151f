"""Ingest writes its index rows with one multi-row INSERT of prepared values
(``imaging.fast_insert``), not through the ORM: the rows must read back as the ORM would
have made them, defaults included, on SQLite and on PostgreSQL."""

from __future__ import annotations

import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from imaging.fast_insert import insert_rows
from imaging.ingest import ingest
from imaging.models import Instance
from privacy.models import PendingBlobDeletion
from replica.models import Copy

pytestmark = pytest.mark.django_db


def test_rows_given_only_some_fields_get_the_models_defaults_and_the_time_now(ct_study):
    with ct_study[1][0].open("rb") as fp:
        instance_id = ingest(fp, source="test").instance_id
    assert instance_id is not None
    before = timezone.now()
    with CaptureQueriesContext(connection) as queries:
        pks = insert_rows(Copy, [dict(instance_id=instance_id, tier=Copy.Tier.REPLICA),
                                 dict(instance_id=instance_id, tier=Copy.Tier.LOCAL, key="k",
                                      state=Copy.State.WRITTEN, size=7, written_at=before)])
    if connection.features.can_return_rows_from_bulk_insert:
        assert len(queries) == 1  # both rows in one statement
    replica, local = (Copy.objects.get(pk=pk) for pk in pks)
    made = Copy(instance_id=instance_id, tier=Copy.Tier.REPLICA)
    for field in Copy._meta.concrete_fields:
        if field.primary_key or field.name == "created":
            continue
        value = getattr(replica, field.attname)
        assert (bytes(value) if isinstance(value, memoryview) else value) == \
            getattr(made, field.attname), field.name
    assert (local.key, local.state, local.size, local.written_at) == (
        "k", Copy.State.WRITTEN, 7, before)
    assert before <= replica.created == local.created <= timezone.now()


def test_a_default_made_by_a_callable_is_made_afresh_for_each_call():
    first, = insert_rows(PendingBlobDeletion, [dict(storage="dicom", key="a")])
    time.sleep(0.01)
    second, = insert_rows(PendingBlobDeletion, [dict(storage="dicom", key="b")])
    made = dict(PendingBlobDeletion.objects.values_list("pk", "created"))
    assert made[first] < made[second]  # timezone.now at each insert, not the first's


def test_the_instance_rows_of_an_ingest_match_what_was_stored(ct_study):
    paths = ct_study[1][:2]
    for path in paths:
        with path.open("rb") as fp:
            assert ingest(fp, source="test").accepted
    rows = list(Instance.objects.order_by("pk").values_list(
        "number_of_frames", "fixity_checked", "fixity_ok", "source", "size_bytes"))
    assert rows == [(1, None, None, "test", path.stat().st_size) for path in paths]
