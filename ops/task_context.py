"""The request id travels with the Celery tasks a request starts (a message header), and
the worker binds it while the task runs, so the task's log lines carry it too."""

from __future__ import annotations

import logging
from typing import Any

from celery import signals

from . import request_id

log = logging.getLogger("ops.tasks")

_BOUND = "_portal_request_id_token"


def connect() -> None:
    signals.before_task_publish.connect(_add_header, weak=False, dispatch_uid="ops.rid.pub")
    signals.task_prerun.connect(_bind, weak=False, dispatch_uid="ops.rid.prerun")
    signals.task_postrun.connect(_unbind, weak=False, dispatch_uid="ops.rid.postrun")
    signals.worker_init.connect(start_health_port, weak=False, dispatch_uid="ops.health")
    from django.conf import settings

    if settings.LOG_FORMAT == "json":
        signals.setup_logging.connect(_keep_json_logging, weak=False, dispatch_uid="ops.logs")


def _keep_json_logging(**_: Any) -> None:
    """A worker logs as the web nodes do: Celery replaces the root logger's handlers with
    its own text format unless a receiver of ``setup_logging`` configures logging itself;
    this one applies Django's LOGGING (JSON lines with ``LOG_FORMAT=json``)."""
    import logging.config

    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)


def _add_header(headers: dict[str, Any] | None = None, **_: Any) -> None:
    rid = request_id.current()
    if rid and headers is not None:
        headers.setdefault(request_id.TASK_HEADER, rid)


def _bind(task: Any = None, task_id: str = "", **_: Any) -> None:
    if task is None:
        return
    # A worker sees the header as an attribute of the task's request; a task run in-process
    # (TASKS_IN_PROCESS) runs inside the request and keeps its id.
    rid = request_id.sane(getattr(task.request, request_id.TASK_HEADER, None))
    rid = rid or request_id.current() or request_id.new()
    setattr(task.request, _BOUND, request_id.bind(rid))
    log.info("task %s started", task.name,
             extra={"fields": {"event": "task", "task": task.name, "task_id": task_id}})


def _unbind(task: Any = None, **_: Any) -> None:
    token = getattr(task.request, _BOUND, None) if task is not None else None
    if token is not None:
        try:
            request_id.unbind(token)
        except ValueError:
            pass  # bound in another context (an eager task finishing in its caller)


def start_health_port(**_: Any) -> None:
    """celeryd_init: a worker's health port (``CELERY_HEALTH_PORT``), in its main process."""
    from django.conf import settings

    from . import health, health_port

    if settings.CELERY_HEALTH_PORT:
        health_port.start(settings.CELERY_HEALTH_BIND, settings.CELERY_HEALTH_PORT,
                          health.worker_checks)
