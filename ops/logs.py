"""Structured logs (``LOG_FORMAT=json``): one JSON object a line, for log shippers.

Every record carries the current request id (:mod:`ops.request_id`); fields a caller
passes with ``extra={"fields": {...}}`` become top-level keys of the line (the request and
association lines are built that way, see :mod:`ops.middleware` and :mod:`ops.dimse_hooks`).
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any

from . import request_id


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record (empty outside a request or task)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.current()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC)
            .isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", "") or request_id.current()
        if rid:
            line["request_id"] = rid
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)
