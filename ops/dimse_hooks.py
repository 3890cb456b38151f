"""What the DICOM listener tells operators: association and operation counts (Prometheus)
and one log line per association (JSON with ``LOG_FORMAT=json``).

Called from :mod:`dimse.handlers` (an association decided, an association ended) and
registered as the listener's ``EVT_DIMSE_SENT`` handler (:mod:`dimse.server`), which sees
every response the listener sends, so each operation is counted once, by its final status,
without a line in each service's handler.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING

from pynetdicom.status import code_to_category

from dimse.stored_send import responses_only

from . import metrics

if TYPE_CHECKING:
    from pynetdicom.events import Event

log = logging.getLogger("ops.associations")

_RESPONSES = {"C_ECHO_RSP": "C-ECHO", "C_STORE_RSP": "C-STORE", "C_FIND_RSP": "C-FIND",
              "C_GET_RSP": "C-GET", "C_MOVE_RSP": "C-MOVE"}


@responses_only
def on_dimse_sent(event: Event) -> None:
    """EVT_DIMSE_SENT: count a response that ends an operation (not a pending one)."""
    message = event.message
    operation = _RESPONSES.get(type(message).__name__)
    if operation is None:
        return
    # The listener's fast C-STORE-RSP (dimse.pdu_fast_codec) keeps its primitive and builds
    # no command set; pynetdicom's own messages have one.
    source = getattr(message, "_primitive", None) or getattr(message, "command_set", None)
    status = getattr(source, "Status", None)
    category = code_to_category(int(status)) if status is not None else "Unknown"
    if category == "Pending":
        return
    metrics.OPERATIONS.labels(operation, category.lower()).inc()


def association_decided(accepted: bool, calling_ae: str, address: str) -> None:
    event = "accepted" if accepted else "refused"
    metrics.ASSOCIATIONS.labels(event).inc()
    if not accepted:
        _line(event, calling_ae, address, None)


def association_ended(calling_ae: str, address: str, started: float, *,
                      aborted: bool) -> None:
    event = "aborted" if aborted else "released"
    metrics.ASSOCIATIONS.labels(event).inc()
    _line(event, calling_ae, address, time.monotonic() - started)


def _line(event: str, calling_ae: str, address: str, seconds: float | None) -> None:
    fields: dict[str, object] = {"event": "association", "outcome": event,
                                 "calling_ae": calling_ae, "peer": address,
                                 "process": os.getpid()}
    if seconds is not None:
        fields["duration_ms"] = round(seconds * 1000, 1)
    log.info("association %s from %s at %s", event, calling_ae, address,
             extra={"fields": fields})
