"""``manage.py replica_keygen [ID]``: print a fresh replica key as a ``REPLICA_KEYS`` entry.

Printed, never stored: the operator keeps it in two places, one of them offline, before
adding it to ``REPLICA_KEYS`` (and then ``REPLICA_CURRENT_KEY``).
"""

from __future__ import annotations

import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from replica.keys import KEY_ID, generate_key


class Command(BaseCommand):
    help = "Print a new random 256-bit replica key as id:<base64>, for REPLICA_KEYS."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "key_id", nargs="?", default=None,
            help="the key's id (default: k<today's date>, e.g. k20260101)")

    def handle(self, *args: Any, **options: Any) -> None:
        key_id = options["key_id"] or f"k{datetime.date.today():%Y%m%d}"
        if not KEY_ID.fullmatch(key_id):
            raise CommandError("a key id is 1 to 64 of A-Z a-z 0-9 . _ -")
        self.stdout.write(f"{key_id}:{generate_key()}")
