"""``manage.py dicom_listener``: the DICOM listener, run beside the web server.

AE title, port and address come from ``DICOM_AE_TITLE``, ``DICOM_PORT`` (default 11112) and
``DICOM_BIND``, as the settings read them from the environment; ``--ae-title``, ``--port``
and ``--host`` override them. The pynetdicom patches (``DICOM_PYNETDICOM_PATCHES``) are
installed here, before anything is served, and refuse to start on another pynetdicom.
"""

from __future__ import annotations

import functools
import gc
import logging
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from dimse.handlers import Listener
from dimse.indexing import recover
from dimse.processes import serve
from dimse.pynetdicom_patches import UnsupportedPynetdicom
from dimse.server import prepare_pynetdicom, start
from ops import health_port
from ops.health import listener_checks

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Run the DICOM listener (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--ae-title", default=settings.DICOM_AE_TITLE)
        parser.add_argument("--port", type=int, default=settings.DICOM_PORT)
        parser.add_argument(
            "--host", default=settings.DICOM_BIND,
            help="address to listen on (default: DICOM_BIND; 0.0.0.0 for all interfaces)",
        )
        parser.add_argument(
            "--network-timeout", type=float, default=settings.DICOM_NETWORK_TIMEOUT,
            help="seconds a peer may stay silent, or not read, before it is disconnected",
        )
        parser.add_argument(
            "--processes", type=int,
            default=settings.DICOM_LISTENER_PROCESSES,
            help="worker processes sharing the port (default: DICOM_LISTENER_PROCESSES)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            prepare_pynetdicom()  # the patches, for this process and the workers it forks
        except UnsupportedPynetdicom as exc:
            raise CommandError(str(exc)) from exc
        listener = Listener(ae_title=options["ae_title"],
                            network_timeout=options["network_timeout"])
        if settings.DICOM_ALLOW_UNKNOWN_PEERS:
            self.stderr.write(self.style.WARNING(
                "DICOM_ALLOW_UNKNOWN_PEERS is set: any AE title from any host is accepted. "
                "Configure the peers (manage.py dicom_peers add) and unset it."
            ))
        recovered = recover()
        if recovered:
            self.stderr.write(self.style.WARNING(
                f"Indexed {len(recovered)} received objects a stopped listener had left in "
                f"{settings.DICOM_SPOOL_DIR}."
            ))
        connections.close_all()  # worker processes open their own
        if settings.DICOM_HEALTH_PORT:  # live/ready/metrics over HTTP (ops.health_port)
            health_port.start(options["host"], settings.DICOM_HEALTH_PORT, functools.partial(
                listener_checks, options["host"], options["port"]))
        processes = max(1, options["processes"])
        self.stdout.write(
            f"DICOM listener {listener.ae_title} on {options['host']}:{options['port']}"
            f" ({processes} process{'es' if processes > 1 else ''})"
        )
        self.stdout.flush()
        # Everything loaded so far (Django, pydicom's dictionaries) lives as long as the
        # process: kept out of the collector's full passes, which otherwise walk it all
        # again and again while objects stream in.
        gc.collect()
        gc.freeze()
        if processes == 1:
            start(listener, options["host"], options["port"], block=True)
        else:
            serve(listener, options["host"], options["port"], processes)
