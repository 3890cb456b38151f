"""Results out: every final report version goes to the EHR as an ``ORU^R01`` over MLLP.

:func:`queue` writes the message into :class:`~orders.models.OutboundMessage` inside the
transaction that makes the report final (``reports.service``), so the report and the
duty to send it are committed together; once it commits, a task sends it
(:func:`send`). Delivery is at least once and counts only on an acknowledgement AA (or CA)
naming the message's control ID; AE/AR, a timeout or a peer that is down leave it pending
with the reason, and it is tried again with exponential backoff, by the task's retries or
by the periodic :func:`sweep`, until ``HL7_RESULTS_MAX_ATTEMPTS`` mark it failed (admin
lists it and can resend it). A retry sends the same text with the same control ID, so the
EHR can recognise a message it already had.

An attempt claims its row with a conditional UPDATE that sets a lease in ``due``, so two
workers never send the same row at once; every write of the attempt is conditional on that
lease. A report's versions go in order: a message is not sent while an earlier one of the
same study is still pending, so an amendment never overtakes the final report it amends.
"""

from __future__ import annotations

import datetime
import enum
import functools
import logging
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef, QuerySet
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditAction, Outcome
from audit.trail import Actor, Target, record
from imaging.models import Study
from reports.models import Report

from . import mllp, oru
from .models import OutboundMessage, ScheduledProcedure

log = logging.getLogger(__name__)

State = OutboundMessage.State
ACTOR = Actor.system("hl7_results")
UNDELIVERED = (State.PENDING, State.SENT)


def configured() -> bool:
    return bool(settings.HL7_RESULTS_HOST)


# --- queueing ----------------------------------------------------------------------------


def queue(report: Report) -> OutboundMessage | None:
    """Queue the ``ORU^R01`` of ``report`` (a final version) in the caller's transaction
    and send it once that commits; None when no EHR is configured."""
    if not configured() or not report.is_final:
        return None
    control_id = uuid.uuid4().hex[:20]
    facts = result_facts(report, control_id, timezone.now())
    message = OutboundMessage.objects.create(
        report=report, study_uid=report.study.study_instance_uid,
        message_type=oru.MESSAGE_TYPE, control_id=control_id, result_status=facts.status,
        host=settings.HL7_RESULTS_HOST, port=settings.HL7_RESULTS_PORT, raw=oru.oru(facts))
    transaction.on_commit(functools.partial(dispatch, [message.pk]), robust=True)
    return message


def dispatch(message_ids: list[int]) -> int:
    """Queue one send task per message (a broker that is down leaves them to the sweep)."""
    from .tasks import send_result

    for pk in message_ids:
        send_result.delay(pk)
    return len(message_ids)


def result_facts(report: Report, control_id: str, now: datetime.datetime) -> oru.ResultFacts:
    """What the message about ``report`` says: the patient and study as archived, the order
    as the EHR sent it (its procedure row, found by the accession number), the text and
    signature as written."""
    study: Study = report.study
    patient = study.patient
    procedure = (ScheduledProcedure.objects.filter(clinic_id=patient.clinic_id,
                                                   accession_number=study.accession_number)
                 .first() if study.accession_number and patient.clinic_id else None)
    author = report.author
    doctor_name = (f"{author.last_name.strip()}^{author.first_name.strip()}"
                   if author.last_name.strip() else report.author_name)
    return oru.ResultFacts(
        control_id=control_id, now=timezone.localtime(now),
        sending_application=settings.HL7_RESULTS_SENDING_APPLICATION,
        sending_facility=settings.HL7_RESULTS_SENDING_FACILITY,
        receiving_application=settings.HL7_RESULTS_RECEIVING_APPLICATION,
        receiving_facility=settings.HL7_RESULTS_RECEIVING_FACILITY,
        patient_id=patient.patient_id, issuer=patient.issuer, patient_name=patient.name,
        birth_date=patient.birth_date, sex=patient.sex,
        accession_number=study.accession_number,
        placer_order_number=procedure.placer_order_number if procedure else "",
        filler_order_number=procedure.filler_order_number if procedure else "",
        requested_procedure_id=procedure.requested_procedure_id if procedure else "",
        procedure=(procedure.requested_procedure_description if procedure else ""
                   ) or study.description,
        referring_physician=(procedure.referring_physician if procedure else ""
                             ) or study.referring_physician,
        observed=_observed(study),
        signed=timezone.localtime(report.signed or report.created),
        status=oru.CORRECTED if report.amendment else oru.FINAL,
        findings=report.findings, impression=report.impression,
        amendment_reason=report.amendment_reason,
        doctor=oru.Doctor(doctor_name, report.author_professional_id),
        link=study_link(study),
    )


def study_link(study: Study) -> str:
    """The study's page in the portal, absolute; '' without ``PORTAL_BASE_URL``."""
    if not settings.PORTAL_BASE_URL:
        return ""
    return settings.PORTAL_BASE_URL + reverse("imaging:study_detail",
                                              args=[study.study_instance_uid])


def _observed(study: Study) -> datetime.datetime | None:
    """When the images were taken (StudyDate, StudyTime), in the portal's time zone."""
    if study.study_date is None:
        return None
    digits = "".join(c for c in study.study_time.split(".")[0] if c.isdigit())[:6]
    digits = digits.ljust(6, "0") if len(digits) in (2, 4, 6) else "000000"
    try:
        moment = datetime.datetime.combine(
            study.study_date, datetime.time(int(digits[:2]), int(digits[2:4]), int(digits[4:])))
    except ValueError:
        moment = datetime.datetime.combine(study.study_date, datetime.time())
    return timezone.make_aware(moment)


# --- sending -----------------------------------------------------------------------------


class Sent(enum.StrEnum):
    ACKNOWLEDGED = "acknowledged"  # AA/CA for this control ID: delivered
    PENDING = "pending"  # not acknowledged; tried again after ``retry_in`` seconds
    FAILED = "failed"  # not acknowledged after the last attempt allowed
    ALREADY = "already"  # acknowledged before, or failed: nothing done
    BUSY = "busy"  # another worker holds it, its wait has not passed, or an earlier one
    GONE = "gone"  # no such message (its report was purged)


@dataclass(frozen=True)
class Attempt:
    outcome: Sent
    retry_in: float | None = None
    reason: str = ""
    next_id: int | None = None  # the study's next message, free to go now


def backoff(attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th attempt failed."""
    base = float(settings.HL7_RESULTS_RETRY_SECONDS)
    return float(min(base * 2 ** max(attempts - 1, 0), settings.HL7_RESULTS_RETRY_MAX_SECONDS))


def lease_seconds() -> float:
    """Long enough for one attempt to connect and wait for its acknowledgement."""
    return float(settings.HL7_RESULTS_CONNECT_TIMEOUT + settings.HL7_RESULTS_ACK_TIMEOUT + 30)


def _earlier_undelivered() -> Exists:
    return Exists(OutboundMessage.objects.filter(study_uid=OuterRef("study_uid"),
                                                 pk__lt=OuterRef("pk"),
                                                 state__in=UNDELIVERED))


def claim(message_id: int, now: datetime.datetime | None = None) -> datetime.datetime | None:
    """Take the message for one attempt: the lease (every write of the attempt is
    conditional on it), or None when it is delivered, failed, held by another worker,
    waiting out its backoff, or behind an earlier message of its study."""
    now = now or timezone.now()
    lease = now + datetime.timedelta(seconds=lease_seconds())
    taken = (OutboundMessage.objects
             .filter(pk=message_id, state__in=UNDELIVERED, due__lte=now)
             .filter(~_earlier_undelivered())
             .update(state=State.SENT, due=lease, attempts=F("attempts") + 1,
                     last_attempt=now))
    return lease if taken == 1 else None


def _ours(message: OutboundMessage, lease: datetime.datetime) -> QuerySet[OutboundMessage]:
    return OutboundMessage.objects.filter(pk=message.pk, state=State.SENT, due=lease)


def send(message_id: int) -> Attempt:
    """One attempt at delivering message ``message_id``; audited whatever its outcome."""
    lease = claim(message_id)
    if lease is None:
        state = OutboundMessage.objects.filter(pk=message_id).values_list(
            "state", flat=True).first()
        if state is None:
            return Attempt(Sent.GONE)
        return Attempt(Sent.BUSY if state in UNDELIVERED else Sent.ALREADY)
    message = OutboundMessage.objects.select_related("report__study__patient").get(
        pk=message_id)
    ack, verdict = "", oru.Verdict(False, "", "")
    try:
        ack = mllp.exchange(message.host, message.port, message.raw,
                            connect_timeout=settings.HL7_RESULTS_CONNECT_TIMEOUT,
                            ack_timeout=settings.HL7_RESULTS_ACK_TIMEOUT)
        verdict = oru.read_acknowledgement(ack, message.control_id)
    except TimeoutError:
        verdict = oru.Verdict(False, "", f"no acknowledgement from {message.destination} "
                                         f"within {settings.HL7_RESULTS_ACK_TIMEOUT:g} s")
    except (OSError, mllp.FramingError) as exc:
        verdict = oru.Verdict(False, "", f"{message.destination}: {exc}")
    return _record(message, lease, ack, verdict)


def _record(message: OutboundMessage, lease: datetime.datetime, ack: str,
            verdict: oru.Verdict) -> Attempt:
    """The attempt's outcome on the row and on the trail, together."""
    now = timezone.now()
    attempts = message.attempts  # read after the claim counted this attempt
    if verdict.delivered:
        state, attempt = State.ACKNOWLEDGED, Attempt(Sent.ACKNOWLEDGED)
        changes = {"acknowledged": now, "last_error": "", "due": now}
    elif attempts >= settings.HL7_RESULTS_MAX_ATTEMPTS:
        state, attempt = State.FAILED, Attempt(Sent.FAILED, reason=verdict.reason)
        changes = {"last_error": verdict.reason, "due": now}
    else:
        wait = backoff(attempts)
        state = State.PENDING
        attempt = Attempt(Sent.PENDING, retry_in=wait, reason=verdict.reason)
        changes = {"last_error": verdict.reason,
                   "due": now + datetime.timedelta(seconds=wait)}
    with transaction.atomic():
        written = _ours(message, lease).update(state=state, ack=ack[:100_000],
                                               ack_code=verdict.code, **changes)
        if not written:  # the lease ran out and another attempt took the message over
            log.warning("HL7 result %s: attempt %d outlived its lease", message.pk, attempts)
            return Attempt(Sent.BUSY, reason="taken over by another attempt")
        record(AuditAction.EXPORT, ACTOR, Target.study(message.report.study),
               Outcome.ALLOWED if verdict.delivered else Outcome.FAILED,
               reason=verdict.reason or f"{message.message_type} acknowledged",
               detail={"hl7": message.message_type, "control_id": message.control_id,
                       "message": message.pk, "destination": message.destination,
                       "attempt": attempts, "ack": verdict.code, "state": str(state),
                       "report_version": message.report.version,
                       "result_status": message.result_status})
    if verdict.delivered:
        log.info("HL7 result %s (%s) acknowledged by %s", message.pk, message.control_id,
                 message.destination)
        following = (OutboundMessage.objects.filter(study_uid=message.study_uid,
                                                    pk__gt=message.pk,
                                                    state__in=UNDELIVERED)
                     .order_by("pk").values_list("pk", flat=True).first())
        return Attempt(Sent.ACKNOWLEDGED, next_id=following)
    log.warning("HL7 result %s (%s) to %s not delivered, attempt %d (%s): %s", message.pk,
                message.control_id, message.destination, attempts, state, verdict.reason)
    return attempt


# --- what was left behind ----------------------------------------------------------------


def due(limit: int, now: datetime.datetime | None = None) -> list[int]:
    """Messages a worker may take now (pending, or sent by an attempt whose lease ran out),
    oldest first."""
    now = now or timezone.now()
    return list(OutboundMessage.objects.filter(state__in=UNDELIVERED, due__lte=now)
                .filter(~_earlier_undelivered())
                .order_by("pk").values_list("pk", flat=True)[:limit])


def sweep(limit: int = 1000) -> int:
    """Queue a send for every message due: what a broker outage, a dead worker or the
    end of a task's retries left behind. Returns how many."""
    return dispatch(due(limit))


def resend(message_ids: list[int]) -> int:
    """Put failed messages back in the queue with their attempts counted from zero (an
    admin's action, once the EHR is fixed); returns how many. Sent after the commit."""
    with transaction.atomic():
        ids = list(OutboundMessage.objects.select_for_update()
                   .filter(pk__in=message_ids, state=State.FAILED)
                   .values_list("pk", flat=True))
        OutboundMessage.objects.filter(pk__in=ids).update(state=State.PENDING, attempts=0,
                                                          due=timezone.now())
        transaction.on_commit(functools.partial(dispatch, ids), robust=True)
    return len(ids)
