"""Prometheus metrics: what the portal's processes count, and what a scrape reads.

Counters and histograms live in the process that counts (a web worker, a listener worker,
a Celery worker). With ``PROMETHEUS_MULTIPROC_DIR`` set (``bin/portal`` and the systemd
units set it) prometheus-client writes them to files there, and a scrape of any process on
the host sums every process's files: that is how several gunicorn workers, the listener's
worker processes and Celery's pool report as one. Without it a scrape reads the serving
process only.

Queue depths and fixity state are read from the database at scrape time
(:class:`DatabaseCollector`), so they are right whichever process answers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

REQUESTS = Counter("portal_http_requests", "HTTP requests answered, by view and status.",
                   ["view", "method", "status"])
REQUEST_SECONDS = Histogram("portal_http_request_duration_seconds",
                            "Time to answer an HTTP request, by view.", ["view"],
                            buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60))
INGESTED = Counter("portal_ingest_objects", "DICOM objects through imaging.ingest, by entry "
                   "point and outcome.", ["entry_point", "outcome"])
ASSOCIATIONS = Counter("portal_dimse_associations", "DICOM associations, by how they were "
                       "decided or ended.", ["event"])
OPERATIONS = Counter("portal_dimse_operations", "DIMSE operations answered, by operation "
                     "and final status category.", ["operation", "status"])
AUDIT_SECONDS = Histogram("portal_audit_write_duration_seconds",
                          "Time to append entries to the audit trail (chain lock included).",
                          buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5))
FIXITY = Counter("portal_fixity_checks", "Stored objects re-hashed by the fixity check, by "
                 "result.", ["result"])


def entry_point(source: str) -> str:
    """The entry point an ingest ``source`` names (``cstore:CT01`` -> ``cstore``); a short,
    fixed vocabulary, so no AE title or file name becomes a label."""
    head = source.split(":", 1)[0]
    return head if head.isidentifier() and len(head) <= 16 else "other"


def count_ingested(source: str, outcome: str) -> None:
    INGESTED.labels(entry_point(source), outcome).inc()


@contextmanager
def timed_audit_write() -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        AUDIT_SECONDS.observe(time.perf_counter() - started)


def count_fixity(ok: bool) -> None:
    FIXITY.labels("ok" if ok else "failed").inc()


class DatabaseCollector(Collector):
    """Gauges read from the index when scraped: replication backlog, export jobs, objects
    whose last fixity check failed."""

    def collect(self) -> Iterator[Metric]:
        from django.db.models import Count

        from imaging.models import Instance
        from privacy.models import DataExport
        from replica.models import Copy

        backlog = GaugeMetricFamily("portal_replication_backlog",
                                    "Replica copies not yet verified, by state.",
                                    labels=["state"])
        pending = (Copy.objects.filter(tier=Copy.Tier.REPLICA)
                   .exclude(state=Copy.State.VERIFIED)
                   .values_list("state").annotate(n=Count("pk")))
        found = dict(pending)
        for state in (Copy.State.PENDING, Copy.State.WRITTEN, Copy.State.FAILED):
            backlog.add_metric([state.value], found.get(state.value, 0))
        yield backlog
        exports = GaugeMetricFamily("portal_export_jobs", "Data export jobs, by status.",
                                    labels=["status"])
        by_status = dict(DataExport.objects.values_list("status").annotate(n=Count("pk")))
        for status in (DataExport.Status.PENDING, DataExport.Status.RUNNING,
                       DataExport.Status.FAILED):
            exports.add_metric([status.value], by_status.get(status.value, 0))
        yield exports
        yield GaugeMetricFamily("portal_fixity_failed_objects",
                                "Stored objects whose last fixity check failed.",
                                value=Instance.all_objects.filter(fixity_ok=False).count())


def exposition(*, with_database: bool = True) -> tuple[bytes, str]:
    """The metrics text of this host (every process's with ``PROMETHEUS_MULTIPROC_DIR``)
    and its content type."""
    registry: CollectorRegistry
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = CollectorRegistry()
        registry.register(_Default())
    if with_database:
        registry.register(DatabaseCollector())
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _Default(Collector):
    """The process's own default registry, inside a registry of one scrape."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()
