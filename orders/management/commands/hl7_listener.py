"""``manage.py hl7_listener``: the HL7 v2 (MLLP) listener for orders and patient updates,
run beside the web server and the DICOM listener. Port ``HL7_PORT`` (default 2575) or
``--port``, address ``HL7_BIND`` or ``--host``."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from orders.mllp import Hl7Server


class Command(BaseCommand):
    help = "Run the HL7 v2 listener (MLLP): ORM^O01, OMI^O23, ADT^A08, ADT^A40."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=settings.HL7_PORT)
        parser.add_argument("--host", default=settings.HL7_BIND,
                            help="address to listen on (default: HL7_BIND)")

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.HL7_ALLOW_UNKNOWN_PEERS:
            self.stderr.write(self.style.WARNING(
                "HL7_ALLOW_UNKNOWN_PEERS is set: any sender from any host is accepted. "
                "Configure the HL7 peers in admin and unset it."))
        server = Hl7Server((options["host"], options["port"]))
        self.stdout.write(f"HL7 listener on {options['host']}:{server.port}")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
