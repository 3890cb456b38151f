"""One HL7 message in, one acknowledgement out: the service behind the MLLP listener.

:func:`receive` recognises the sender, reads the message (:mod:`orders.hl7_messages`),
applies it in one transaction (an order scheduled, changed or cancelled; demographics
updated; two records merged), keeps the raw text with its outcome, audits it, and returns
the ``ACK``: AA applied, AE understood but not applied (the reason in MSA-3 and ERR),
AR rejected (malformed, another type or version, an unknown sender). Nothing is applied
in part: a message refused half-way rolls back.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.models import AuditAction, Outcome
from audit.trail import Actor, Target, record
from imaging import clinics, policies
from imaging.models import Patient
from imaging.policies import Action
from imaging.principals import Principal

from . import patient_records
from .hl7_messages import (
    APPLICATION_ERROR,
    UNKNOWN_KEY,
    Header,
    OrderFacts,
    PatientFacts,
    Received,
    Refused,
    acknowledgement,
    read,
    read_header,
)
from .models import Hl7Message, Hl7Peer, ScheduledProcedure
from .peers import principal_for, recognise

log = logging.getLogger(__name__)

RAW_KEPT = 1024 * 1024  # what is kept of a message refused for its size or framing


@dataclass(frozen=True)
class Answer:
    code: str
    reason: str
    ack: str
    message_pk: int


def _actor(header: Header | None, address: str, port: int | None) -> Actor:
    name = header.sending_application if header is not None else ""
    return Actor.peer(name or "HL7", address, port)


def receive(text: str, address: str, port: int | None = None) -> Answer:
    """Handle one message (its text, without MLLP framing) from ``address``."""
    header: Header | None = None
    peer: Hl7Peer | None = None
    actor = _actor(None, address, port)
    try:
        header = read_header(text)
        actor = _actor(header, address, port)
        peer = recognise(header, address)
        principal = principal_for(peer, allow_unknown=settings.HL7_ALLOW_UNKNOWN_PEERS)
        decision = policies.decide(principal, Action.ASSOCIATION)
        if not decision:
            why = ("the sender is disabled" if peer is not None else
                   f"sender {header.sending_application}/{header.sending_facility} at "
                   f"{address} is not a known HL7 peer")
            raise Refused("AR", why, UNKNOWN_KEY, header)
        received = read(text)
        clinic_id = peer.clinic_id if peer is not None else clinics.for_new_patient()
        with transaction.atomic():
            message = _keep(text, header, peer, address, "AA", "")
            targets, detail = _apply(received, principal, clinic_id, actor)
            record(AuditAction.STORE, actor, targets, Outcome.ALLOWED,
                   reason=f"HL7 {header.message_type}",
                   detail={"hl7": header.message_type, "control_id": header.control_id,
                           "message": message.pk, **detail})
        return Answer("AA", "", _ack(header, "AA"), message.pk)
    except Refused as exc:
        header = exc.header or header
        return _refused(text, header, peer, address, actor, exc.code, exc.reason,
                        exc.condition)
    except Exception:
        log.exception("cannot apply the HL7 message from %s", address)
        return _refused(text, header, peer, address, actor, "AE",
                        "the portal could not apply the message (internal error)",
                        APPLICATION_ERROR)


def refuse_framing(data: bytes, address: str, port: int | None, reason: str) -> Answer:
    """Bytes that are not an MLLP frame, or a frame over the size limit: kept (truncated),
    audited, answered AR."""
    text = data[:RAW_KEPT].decode("latin-1")
    return _refused(text, None, None, address, _actor(None, address, port), "AR", reason,
                    APPLICATION_ERROR)


def _refused(text: str, header: Header | None, peer: Hl7Peer | None, address: str,
             actor: Actor, code: str, reason: str, condition: str) -> Answer:
    log.info("HL7 message from %s answered %s: %s", address, code, reason)
    with transaction.atomic():
        message = _keep(text, header, peer, address, code, reason)
        unknown = code == "AR" and condition == UNKNOWN_KEY
        record(AuditAction.ASSOCIATION if unknown else AuditAction.STORE, actor, None,
               Outcome.DENIED if unknown else Outcome.FAILED, reason=reason,
               detail={"hl7": header.message_type if header else "",
                       "control_id": header.control_id if header else "",
                       "message": message.pk, "ack": code})
    return Answer(code, reason, _ack(header, code, reason, condition), message.pk)


def _keep(text: str, header: Header | None, peer: Hl7Peer | None, address: str, code: str,
          reason: str) -> Hl7Message:
    return Hl7Message.objects.create(
        peer=peer, remote_address=address[:64],
        control_id=header.control_id[:64] if header else "",
        message_type=header.message_type[:32] if header else "", raw=text, outcome=code,
        reason=reason)


def _ack(header: Header | None, code: str, reason: str = "", condition: str = "") -> str:
    return acknowledgement(header, code, reason=reason, condition=condition,
                           control_id=uuid.uuid4().hex[:20], now=timezone.localtime())


# --- applying a message ------------------------------------------------------------------


def _error(reason: str) -> Refused:
    return Refused("AE", reason, APPLICATION_ERROR)


def _existing(facts: PatientFacts | str, principal: Principal) -> Patient | None:
    """The stored patient with this ID, if the sender may write to it; AE if it is
    another clinic's (the policy decides, as for a DICOM peer's store)."""
    patient_id = facts if isinstance(facts, str) else facts.patient_id
    # HL7 carries no DICOM IssuerOfPatientID: one record with the ID, or the one without
    # an issuer among several.
    candidates = list(Patient.objects.select_for_update().filter(patient_id=patient_id)
                      .order_by("issuer")[:2])
    if not candidates:
        return None
    if len(candidates) > 1 and candidates[0].issuer:
        raise _error(f"patient ID {patient_id} is held under several issuers")
    patient = candidates[0]
    decision = policies.decide(principal, Action.STORE, patient)
    if not decision:
        raise _error(f"patient {patient_id}: {decision.why}")
    return patient


def _patient(facts: PatientFacts, principal: Principal, clinic_id: int | None) -> Patient:
    patient = _existing(facts, principal)
    if patient is not None:
        patient_records.update_demographics(patient, name=facts.name,
                                            birth_date=facts.birth_date, sex=facts.sex,
                                            only_missing=True)
        return patient
    if clinic_id is None:
        raise _error("the sender feeds no clinic, so a new patient cannot be created")
    return Patient.objects.create(patient_id=facts.patient_id, name=facts.name,
                                  birth_date=facts.birth_date, sex=facts.sex,
                                  clinic_id=clinic_id)


def _apply(received: Received, principal: Principal, clinic_id: int | None,
           actor: Actor) -> tuple[list[Target], dict[str, Any]]:
    kind = received.header.message_type
    if received.order is not None:
        return _order(received.patient, received.order, principal, clinic_id)
    if kind == "ADT^A08":
        patient = _existing(received.patient, principal)
        if patient is None:
            raise _error(f"patient {received.patient.patient_id} is not in the archive")
        facts = received.patient
        changed = patient_records.update_demographics(
            patient, name=facts.name, birth_date=facts.birth_date, sex=facts.sex)
        return [Target.patient(patient)], {"changed": changed}
    # ADT^A40
    prior = _existing(received.prior_patient_id, principal)
    if prior is None:
        raise _error(f"prior patient {received.prior_patient_id} (MRG-1) is not in the "
                     f"archive")
    survivor = _patient(received.patient, principal, clinic_id or prior.clinic_id)
    moved = patient_records.merge(prior, survivor, actor,
                                  detail={"hl7": kind,
                                          "control_id": received.header.control_id})
    return [Target.patient(survivor)], {"merged_from": prior.patient_id,
                                        "studies_moved": len(moved)}


def _order(facts: PatientFacts, order: OrderFacts, principal: Principal,
           clinic_id: int | None) -> tuple[list[Target], dict[str, Any]]:
    if order.cancels:
        return _cancel(facts, order, principal, clinic_id)
    patient = _patient(facts, principal, clinic_id)
    assert order.scheduled is not None  # read() refuses a new order without one
    clinic = clinic_id or patient.clinic_id
    if clinic is None:
        raise _error("the sender feeds no clinic")
    procedure = (ScheduledProcedure.objects.select_for_update()
                 .filter(clinic_id=clinic, accession_number=order.accession_number).first())
    if procedure is not None and procedure.patient_id != patient.pk:
        raise _error(f"accession number {order.accession_number} is already ordered for "
                     f"another patient")
    if procedure is not None and procedure.status in (
            ScheduledProcedure.Status.COMPLETED, ScheduledProcedure.Status.IN_PROGRESS):
        raise _error(f"order {order.accession_number} is {procedure.status} and cannot "
                     f"be changed")
    values = {
        "patient": patient, "requested_procedure_id": order.requested_procedure_id,
        "requested_procedure_description": order.requested_procedure_description,
        "modality": order.modality, "scheduled_station_ae_title": order.station_ae_title,
        "scheduled_date": order.scheduled.date(),
        "scheduled_time": order.scheduled.time(),
        "referring_physician": order.referring_physician[:324], "priority": order.priority,
        "status": ScheduledProcedure.Status.SCHEDULED,
        "placer_order_number": order.placer_order_number[:64],
        "filler_order_number": order.filler_order_number[:64],
    }
    created = procedure is None
    if procedure is None:
        procedure = ScheduledProcedure(clinic_id=clinic,
                                       accession_number=order.accession_number)
    for field, value in values.items():
        setattr(procedure, field, value)
    procedure.save()
    return [Target.patient(patient)], {"accession_number": order.accession_number,
                                       "order": "created" if created else "updated",
                                       "procedure": procedure.pk}


def _cancel(facts: PatientFacts, order: OrderFacts, principal: Principal,
            clinic_id: int | None) -> tuple[list[Target], dict[str, Any]]:
    patient = _existing(facts, principal)
    found = ScheduledProcedure.objects.select_for_update().filter(
        accession_number=order.accession_number)
    if clinic_id is not None:
        found = found.filter(clinic_id=clinic_id)
    procedure = found.first() if patient is not None else None
    if procedure is None or procedure.patient_id != (patient.pk if patient else None):
        raise _error(f"no order {order.accession_number} for patient {facts.patient_id}")
    if procedure.status == ScheduledProcedure.Status.COMPLETED:
        raise _error(f"order {order.accession_number} is completed and cannot be cancelled")
    procedure.status = ScheduledProcedure.Status.CANCELLED
    procedure.save(update_fields=["status", "updated"])
    assert patient is not None
    return [Target.patient(patient)], {"accession_number": order.accession_number,
                                       "order": "cancelled", "procedure": procedure.pk}


def schedule_by_hand(principal: Principal, actor: Actor, clinic_id: int,
                     patient: PatientFacts, order: OrderFacts) -> None:
    """An order a staff member entered in the portal: applied and audited as an HL7 order
    is (:class:`Refused` with the reason when it cannot be)."""
    with transaction.atomic():
        targets, detail = _order(patient, order, principal, clinic_id)
        record(AuditAction.STORE, actor, targets, Outcome.ALLOWED,
               reason="order entered in the portal", detail=detail)
