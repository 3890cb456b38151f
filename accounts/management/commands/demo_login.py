"""``manage.py demo_login``: the superuser "admin" with a fresh random password, printed,
and a one-time link to enrol its second factor while it has none.

Run by ``bin/portal`` on every start so a demo always has a working login, and no password
is ever written in the repository or reused between runs.
"""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from accounts import enrolment
from accounts.models import User
from imaging.demo import reset_admin


class Command(BaseCommand):
    help = (
        "Ensure the superuser 'admin' (role admin) exists, give it a new random password "
        "and print the login. Any earlier password stops working."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin")
        parser.add_argument(
            "--port", default=os.environ.get("PORT") or "8000",
            help="port shown in the URL (default: $PORT, else 8000)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        username = options["username"]
        password = reset_admin(username)
        base_url = f"http://127.0.0.1:{options['port']}"
        link = enrolment.demo_link(User.objects.get(username=username), base_url, "demo_login")
        if link:
            self.stdout.write(
                f"First open {link} (once, within {settings.ENROLMENT_LINK_HOURS} h) to set "
                f"up {username}'s authenticator app, then:"
            )
        self.stdout.write(
            f"Log in at {base_url}/ as {username} with password {password}"
        )
