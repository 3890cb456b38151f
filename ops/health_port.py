"""The HTTP health port of a process that is not the web server: the DICOM listener's
(``DICOM_HEALTH_PORT``) and a Celery worker's (``CELERY_HEALTH_PORT``), what an
orchestrator or HAProxy probes on such a node.

``/health/live``: the process answers. ``/health/ready``: its own checks pass (the
listener: its DICOM port accepts a connection and the database answers; a worker: the
database and the broker). ``/metrics``: the process's Prometheus metrics (every process's
of the role with ``PROMETHEUS_MULTIPROC_DIR``), under the same ``METRICS_TOKEN`` /
``METRICS_ALLOWED_NETS`` rule as the web's. A tiny HTTP server in a thread of the main
process: it lives and dies with it, so a probe never reports a process that is gone, and
the node needs no web server.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from django.db import connections
from health_check.base import HealthCheck

from . import health, metrics
from .metrics_access import Access, decide

log = logging.getLogger(__name__)


Checks = Callable[[], dict[str, HealthCheck]]


class HealthServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], checks: Checks) -> None:
        self.checks = checks
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: HealthServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            if path == "/health/live":
                self._json(HTTPStatus.OK, {"status": "ok"})
            elif path == "/health/ready":
                ok, checks = health.run(self.server.checks())
                self._json(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE,
                           {"status": "ok" if ok else "unavailable", "checks": checks})
            elif path == "/metrics" and decide(
                    self.client_address[0],
                    self.headers.get("Authorization", "")) is Access.ALLOWED:
                body, content_type = metrics.exposition(with_database=False)
                self._send(HTTPStatus.OK, body, content_type)
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
        finally:
            connections.close_all()

    do_HEAD = do_GET

    def _json(self, status: HTTPStatus, body: dict[str, object]) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("health port: " + format, *args)


def start(host: str, port: int, checks: Checks) -> HealthServer:
    """Serve the health port in a daemon thread; returns the server (``shutdown()`` it)."""
    server = HealthServer((host, port), checks)
    threading.Thread(target=server.serve_forever, name="dicom-health", daemon=True).start()
    return server
