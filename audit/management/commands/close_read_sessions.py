"""``manage.py close_read_sessions``: write the final count of idle viewing sessions."""

from typing import Any

from django.core.management.base import BaseCommand

from audit.read_sessions import close_idle


class Command(BaseCommand):
    help = "Close viewing sessions idle for longer than AUDIT_READ_SESSION_SECONDS."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(f"closed {close_idle()} viewing sessions")
