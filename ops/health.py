"""Health probes for load balancers and orchestrators.

*Live*: the process answers; nothing else is touched, so a database outage never gets
healthy web nodes restarted. *Ready*: every service the node needs works now: the
database, the cache, the Celery broker (when one is configured), the DICOM storage (a
tiny probe object written, read back and deleted) and the replica store (when
configured). The checks are django-health-check's where it has one; the answer names
each check and says "ok" or a short, fixed error text: never a host name, a credential
or anything about patients.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import socket
from collections.abc import Sequence

from django.conf import settings
from health_check.base import HealthCheck
from health_check.checks import Cache, Database, Storage
from health_check.exceptions import ServiceUnavailable

PROBE_TIMEOUT = datetime.timedelta(seconds=3)


@dataclasses.dataclass
class Broker(HealthCheck):  # type: ignore[misc]  # the library is untyped
    """The Celery broker accepts a connection (workers need not be up: a web node can
    queue work for them)."""

    timeout: datetime.timedelta = dataclasses.field(default=PROBE_TIMEOUT, repr=False)

    def run(self) -> None:
        from portal.celery import app

        try:
            with app.connection_for_write(url=settings.CELERY_BROKER_URL) as conn:
                conn.ensure_connection(max_retries=1, timeout=int(self.timeout.total_seconds()))
        except Exception as exc:
            raise ServiceUnavailable("broker unreachable") from exc


@dataclasses.dataclass
class ReplicaStore(HealthCheck):  # type: ignore[misc]
    """The replica bucket answers (a HEAD of the bucket: read access, no data moved)."""

    timeout: datetime.timedelta = dataclasses.field(default=PROBE_TIMEOUT, repr=False)

    def run(self) -> None:
        from replica import store

        try:
            store.client().head_bucket(Bucket=store.bucket())
        except Exception as exc:
            raise ServiceUnavailable("replica store unreachable") from exc


@dataclasses.dataclass
class DicomPort(HealthCheck):  # type: ignore[misc]
    """The listener's DICOM port accepts a TCP connection (closed at once, before any
    association request: no audit entry, no work)."""

    host: str = "127.0.0.1"
    port: int = 0
    timeout: datetime.timedelta = dataclasses.field(default=PROBE_TIMEOUT, repr=False)

    def run(self) -> None:
        try:
            with socket.create_connection((self.host, self.port),
                                          timeout=self.timeout.total_seconds()):
                pass
        except OSError as exc:
            raise ServiceUnavailable("DICOM port does not accept") from exc


def web_checks() -> dict[str, HealthCheck]:
    checks: dict[str, HealthCheck] = {
        "database": Database(),
        "cache": Cache(),
        "storage": Storage(alias="dicom"),
    }
    if settings.CELERY_BROKER_URL and not settings.TASKS_IN_PROCESS:
        checks["broker"] = Broker()
    if settings.REPLICA_URL:
        checks["replica"] = ReplicaStore()
    return checks


def listener_checks(dicom_host: str, dicom_port: int) -> dict[str, HealthCheck]:
    # A listener bound to every interface is probed on loopback.
    host = "127.0.0.1" if dicom_host in ("", "0.0.0.0") else (  # noqa: S104
        "::1" if dicom_host == "::" else dicom_host)
    return {"database": Database(), "dicom": DicomPort(host=host, port=dicom_port)}


def worker_checks() -> dict[str, HealthCheck]:
    return {"database": Database(), "broker": Broker()}


def run(checks: dict[str, HealthCheck]) -> tuple[bool, dict[str, str]]:
    """Run the checks at once; whether all passed, and each one's "ok" or error text."""
    names: Sequence[str] = list(checks)

    async def gather() -> list[object]:
        return list(await asyncio.gather(*(checks[n].get_result() for n in names)))

    results = asyncio.run(gather())
    # Only a fixed word per check: the library's messages may name hosts; they are in the
    # log (django-health-check logs each failure with its cause).
    answer = {name: "ok" if getattr(result, "error", None) is None else "unavailable"
              for name, result in zip(names, results, strict=True)}
    return all(v == "ok" for v in answer.values()), answer
