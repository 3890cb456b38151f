"""Restore drills: a random sample of studies brought back from the replica (a real S3
endpoint, moto's server mode) and checked byte for byte, a report of every drill, and an
admin index that warns when no drill has succeeded within its period.

Studies are replicated by the portal's own ingest and replication; damage is done to the
bucket directly, as a failing disk or a careless hand at the provider would.
"""

from __future__ import annotations

import datetime
import logging
import random
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from imaging.ingest import Outcome, ingest
from imaging.models import Instance, Study
from replica import drill, tasks
from replica.management.commands.restore_drill import byte_size
from replica.models import Copy, DrillReport, IntegrityAlert
from tests.celery_support import REDIS_URL, run_on_worker
from tests.s3_support import s3_endpoint  # noqa: F401 - a fixture
from tests.test_replication import (  # noqa: F401 - a fixture
    _bucket,
    _configure,
    replica,
)

pytestmark = pytest.mark.django_db


def _replicated(*studies: tuple[str, list[Path]], capture: Any) -> None:
    """Each file through the one ingest path; its replication runs as after the commit."""
    for _, paths in studies:
        for path in paths:
            with capture(execute=True), path.open("rb") as fp:
                assert ingest(fp, source="test").outcome == Outcome.STORED
    assert set(Copy.objects.filter(tier=Copy.Tier.REPLICA).values_list("state", flat=True)) \
        == {Copy.State.VERIFIED}


@pytest.fixture
def two_studies(replica, ct_study, other_study, django_capture_on_commit_callbacks):  # noqa: F811
    _replicated(ct_study, other_study, capture=django_capture_on_commit_callbacks)
    return replica


def test_a_drill_of_every_study_brings_back_every_object_and_records_a_good_report(
    two_studies, ct_study, other_study, tmp_path, monkeypatch
):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where scratch space goes

    report = drill.run(studies=10)

    assert report.ok and report.failure_count == 0 and report.failures == []
    assert report.studies == 2
    assert report.objects_checked == len(ct_study[1]) + len(other_study[1]) == 16
    assert report.bytes_checked == sum(p.stat().st_size for p in ct_study[1] + other_study[1])
    assert report.finished is not None and report.finished >= report.started
    assert report.seconds > 0
    assert DrillReport.objects.get() == report
    assert list(scratch.iterdir()) == []  # its scratch directory is gone


def test_the_sample_is_of_whole_studies_and_keeps_within_the_byte_limit(
    two_studies, ct_study, other_study
):
    small = sum(p.stat().st_size for p in other_study[1])
    large = sum(p.stat().st_size for p in ct_study[1])
    assert small < large

    one = drill.run(studies=1, rng=random.Random(1))
    assert (one.studies, one.ok) == (1, True)
    assert one.objects_checked in (len(ct_study[1]), len(other_study[1]))

    within = drill.run(studies=10, byte_limit=small)  # only charlie's MR study fits
    assert (within.studies, within.objects_checked, within.bytes_checked) == (
        1, len(other_study[1]), small)

    none_fits = drill.run(studies=10, byte_limit=small - 1)
    assert not none_fits.ok and none_fits.objects_checked == 0
    assert "nothing to check" in none_fits.failures[0]["reason"]


def test_a_damaged_replica_object_fails_the_drill_and_is_listed_with_its_reason(
    two_studies, caplog
):
    damaged, missing = Copy.objects.filter(tier=Copy.Tier.REPLICA).order_by("pk")[:2]
    obj = two_studies.Object(damaged.key).get()
    body = bytearray(obj["Body"].read())
    body[len(body) // 2] ^= 0x01  # one flipped bit, its envelope kept
    two_studies.put_object(Key=damaged.key, Body=bytes(body), Metadata=obj["Metadata"])
    two_studies.Object(missing.key).delete()

    with caplog.at_level(logging.ERROR, logger="replica.drill"):
        report = drill.run(studies=10)

    assert not report.ok and report.failure_count == 2 and report.objects_checked == 16
    by_instance = {f["instance"]: f for f in report.failures}
    assert set(by_instance) == {damaged.instance_id, missing.instance_id}
    assert by_instance[damaged.instance_id]["key"] == damaged.key
    assert "fails authentication" in by_instance[damaged.instance_id]["reason"]
    assert "NoSuchKey" in by_instance[missing.instance_id]["reason"]
    errors = [r for r in caplog.records
              if r.levelno == logging.ERROR and r.name == "replica.drill"]
    assert len(errors) == 2 and damaged.key in " ".join(r.getMessage() for r in errors)


def test_a_failed_object_is_checked_again_by_fixity_alerted_and_repaired_from_local(
    two_studies
):
    damaged, missing = Copy.objects.filter(tier=Copy.Tier.REPLICA).order_by("pk")[:2]
    obj = two_studies.Object(damaged.key).get()
    body = bytearray(obj["Body"].read())
    body[len(body) // 2] ^= 0x01
    two_studies.put_object(Key=damaged.key, Body=bytes(body), Metadata=obj["Metadata"])
    two_studies.Object(missing.key).delete()

    assert not drill.run(studies=10).ok  # its fixity checks run (in-process here) after it

    alerts = {a.instance_id: a for a in IntegrityAlert.objects.filter(tier=Copy.Tier.REPLICA)}
    assert set(alerts) == {damaged.instance_id, missing.instance_id}
    assert alerts[damaged.instance_id].kind == IntegrityAlert.Kind.MISMATCH  # altered
    assert alerts[missing.instance_id].kind == IntegrityAlert.Kind.MISSING
    assert all(a.repaired_at is not None for a in alerts.values())
    again = drill.run(studies=10)
    assert again.ok and again.objects_checked == 16


def test_an_object_swapped_for_another_valid_one_fails_on_its_hash(two_studies):
    first, second = Copy.objects.filter(tier=Copy.Tier.REPLICA).order_by("pk")[:2]
    other = two_studies.Object(second.key).get()
    two_studies.put_object(Key=first.key, Body=other["Body"].read(), Metadata=other["Metadata"])

    report = drill.run(studies=10)

    assert not report.ok and [f["instance"] for f in report.failures] == [first.instance_id]
    assert f"{first.instance.sha256} on record" in report.failures[0]["reason"]


def test_copies_not_yet_verified_are_not_drilled(two_studies, other_study):
    pending = Copy.objects.filter(tier=Copy.Tier.REPLICA,
                                  instance__series__study__study_instance_uid=other_study[0])
    pending.update(state=Copy.State.PENDING)
    report = drill.run(studies=10)
    assert report.ok and report.studies == 1 and report.objects_checked == 12


def test_the_command_reports_and_fails_loudly(two_studies, capsys):
    call_command("restore_drill", "--sample", "2", "--bytes", "1G")
    assert "2 studies, 16 objects" in capsys.readouterr().out

    copy = Copy.objects.filter(tier=Copy.Tier.REPLICA).first()
    assert copy is not None
    two_studies.Object(copy.key).delete()
    with pytest.raises(CommandError, match="1 failures"):
        call_command("restore_drill", "--sample", "2")
    assert copy.key in capsys.readouterr().err
    with pytest.raises(CommandError, match="--bytes"):
        call_command("restore_drill", "--bytes", "lots")
    with pytest.raises(CommandError, match="--sample"):
        call_command("restore_drill", "--sample", "0")
    assert DrillReport.objects.count() == 2


def test_byte_limits_are_read_in_binary_units():
    assert [byte_size(t) for t in ("500000", "800M", "2G", "1GiB", "64k")] == [
        500000, 800 * 2**20, 2 * 2**30, 2**30, 64 * 2**10]
    for bad in ("", "0", "-1", "2X", "1.5G"):
        with pytest.raises(ValueError):
            byte_size(bad)


def test_without_a_replica_the_drill_refuses_and_the_task_does_nothing(settings):
    settings.REPLICA_URL = ""
    with pytest.raises(drill.DrillRefused, match="REPLICA_URL"):
        drill.run()
    assert tasks.restore_drill.delay().get() is None
    assert not DrillReport.objects.exists()


def test_the_beat_task_runs_a_drill_of_the_configured_sample(two_studies, settings):
    settings.RESTORE_DRILL_SAMPLE = 1
    pk = tasks.restore_drill.delay().get()
    assert pk is not None
    report = DrillReport.objects.get(pk=pk)
    assert report.ok and report.studies == 1
    assert "replica.tasks.restore_drill" in {
        e["task"] for e in settings.CELERY_BEAT_SCHEDULE.values()}


WARNING = "No restore drill has succeeded yet"
OVERDUE = "The last successful restore drill was"
LAST_GOOD = "Last successful restore drill:"


def _index(client: Any) -> str:
    page = client.get("/admin/", HTTP_ACCEPT_LANGUAGE="en")
    assert page.status_code == 200
    return str(page.content.decode())


def test_the_admin_index_warns_until_a_drill_succeeds_and_again_once_it_is_too_old(
    two_studies, logged_in, settings
):
    settings.RESTORE_DRILL_INTERVAL_SECONDS = 2 * 24 * 3600
    assert WARNING in _index(logged_in)  # a replica, and no drill ever

    old = timezone.now() - datetime.timedelta(days=3)
    DrillReport.objects.create(started=old, finished=old, studies=2, objects_checked=16,
                               ok=True)
    text = _index(logged_in)
    assert OVERDUE in text and WARNING not in text
    assert "3\xa0days ago; a drill is due every 2\xa0days" in text

    report = drill.run(studies=10)
    assert report.ok
    text = _index(logged_in)
    assert OVERDUE not in text and WARNING not in text
    assert LAST_GOOD in text and "16 objects of 2 studies" in text


def test_a_failed_drill_after_the_last_good_one_is_on_the_index_with_a_link(
    two_studies, logged_in
):
    assert drill.run(studies=10).ok
    copy = Copy.objects.filter(tier=Copy.Tier.REPLICA).first()
    assert copy is not None
    two_studies.Object(copy.key).delete()
    failed = drill.run(studies=10)

    text = _index(logged_in)
    assert "failed: 1 object could not be restored" in text
    assert f"/admin/replica/drillreport/{failed.pk}/change/" in text
    assert LAST_GOOD in text and OVERDUE not in text  # the good one is recent still

    page = logged_in.get(f"/admin/replica/drillreport/{failed.pk}/change/",
                         HTTP_ACCEPT_LANGUAGE="en")
    assert page.status_code == 200 and copy.key in page.content.decode()
    assert logged_in.get("/admin/replica/drillreport/add/").status_code == 403


def test_without_a_replica_or_a_drill_the_index_says_nothing(logged_in, settings):
    settings.REPLICA_URL = ""
    text = _index(logged_in)
    assert WARNING not in text and LAST_GOOD not in text


def test_staff_without_the_view_permission_see_no_drill_notice(two_studies, client, olga):
    client.force_login(olga)
    assert WARNING not in _index(client)


def test_instances_of_the_sampled_studies_are_all_checked(two_studies, ct_study):
    study = Study.objects.get(study_instance_uid=ct_study[0])
    ids = set(Instance.objects.filter(series__study=study).values_list("pk", flat=True))
    targets = drill.targets([study.pk])
    assert {t.instance_id for t in targets} == ids and len(targets) == 12


@pytest.mark.slow
@pytest.mark.skipif(not REDIS_URL, reason="needs REDIS_URL pointing at a Redis server")
@pytest.mark.django_db(transaction=True)
def test_a_celery_worker_runs_the_beat_drill_and_its_report_is_recorded(
    s3_endpoint, settings, ct_study, dicom_storage, tmp_path  # noqa: F811
):
    env = _configure(settings, s3_endpoint, _bucket(s3_endpoint).name)
    for path in ct_study[1][:3]:  # replicated in-process as each commits
        with path.open("rb") as fp:
            assert ingest(fp, source="test").outcome == Outcome.STORED
    queue = f"test-drill-{uuid.uuid4().hex[:12]}"
    pk = run_on_worker(tasks.restore_drill, queue, dicom_storage, tmp_path / "worker.log", env)
    assert pk is not None
    report = DrillReport.objects.get(pk=pk)
    assert report.ok and report.objects_checked == 3
