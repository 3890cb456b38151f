"""Structured reports a reader adds to a study she may read: a doctor's measurements saved
from the viewer (OHIF's "Create report" stores a DICOM SR by STOW-RS), by someone who may
not store images.

Checked per object before the one ingest path: it must be a structured report (the SR
family of SOP classes) of a study already in the archive whose patient the caller may add
reports for (``policies.Action.ADD_REPORT``: a doctor's active grant). A study that does
not exist and one the caller may not see get the same answer, so a refusal reveals nothing
the archive holds; the audit trail gets the policy's reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO

from pydicom import dcmread

from . import policies
from .models import Study
from .principals import Principal

SR_FAMILY = "1.2.840.10008.5.1.4.1.1.88."  # SR documents, key object selections
REFUSED = "only a structured report (DICOM SR) of a study you may read can be added"


@dataclass(frozen=True)
class Refusal:
    """Why the object may not be added: ``reason`` for the sender, ``why`` for the trail."""

    reason: str
    why: str
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    study_uid: str = ""


def check(principal: Principal, fp: IO[bytes]) -> str | Refusal:
    """The Study Instance UID of the report in ``fp`` when ``principal`` may add it there,
    else a :class:`Refusal`. ``fp`` is left where it was."""
    start = fp.tell()
    try:
        ds = dcmread(fp, stop_before_pixels=True, force=True,
                     specific_tags=["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID"])
        sop_class = str(ds.get("SOPClassUID", ""))
        sop_uid = str(ds.get("SOPInstanceUID", ""))
        study_uid = str(ds.get("StudyInstanceUID", ""))
    except Exception:  # pydicom raises many types on garbage
        return Refusal(REFUSED, "not a readable DICOM object")
    finally:
        fp.seek(start)
    if not sop_class.startswith(SR_FAMILY):
        return Refusal(REFUSED, f"SOP class {sop_class or '(none)'} is not a structured "
                                "report", sop_class, sop_uid, study_uid)
    study = Study.objects.select_related("patient").filter(
        study_instance_uid=study_uid).first() if study_uid else None
    if study is None:
        return Refusal(REFUSED, "no such study", sop_class, sop_uid, study_uid)
    decision = policies.decide(principal, policies.Action.ADD_REPORT, study.patient)
    if not decision:
        return Refusal(REFUSED, decision.why or "may not add reports", sop_class, sop_uid,
                       study_uid)
    return study_uid
