"""``manage.py make_demo_data``: demo patients with current and prior CT/MR studies.

The work is :func:`imaging.demo.make_demo_data`; this command sizes it, shows progress and
prints what was added and the demo users' logins. Safe to run on every start: demo data
already present is recognised and left alone.
"""

from __future__ import annotations

import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from accounts import enrolment
from accounts.models import User
from imaging import demo
from imaging.ingest import Outcome


class Command(BaseCommand):
    help = (
        "Create demo patients, each with a current and a year-older prior CT/MR study "
        "(synthetic images stored through the ingest path), and demo users with fresh "
        "random passwords. Running it again adds nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        defaults = demo.Options()
        parser.add_argument(
            "--patients", type=int, default=defaults.patients,
            help=f"how many demo patients, 1 to {len(demo.PATIENTS)} "
                 f"(default {defaults.patients})",
        )
        parser.add_argument(
            "--slices", type=int, default=defaults.slices,
            help=f"slices per series (default {defaults.slices})",
        )
        parser.add_argument(
            "--size", type=int, default=defaults.size,
            help=f"image rows and columns in pixels (default {defaults.size}; 512 as on "
                 f"real scanners)",
        )
        parser.add_argument(
            "--no-progress", action="store_true", help="do not draw a progress bar"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not 1 <= options["patients"] <= len(demo.PATIENTS):
            raise CommandError(f"--patients must be between 1 and {len(demo.PATIENTS)}")
        if not 1 <= options["slices"] <= 2000:
            raise CommandError("--slices must be between 1 and 2000")
        if not 16 <= options["size"] <= 2048:
            raise CommandError("--size must be between 16 and 2048")
        opts = demo.Options(options["patients"], options["slices"], options["size"])

        pending = demo.pending_instances(opts)
        progress_stream: Any = self.stderr._out
        with tqdm(
            total=pending, unit=" images", desc="Demo data",
            disable=options["no_progress"] or not pending, file=progress_stream,
        ) as bar:
            report = demo.make_demo_data(opts, progress=bar.update)

        for problem in report.problems:
            self.stderr.write(
                f"{problem.outcome.value}: {problem.sop_instance_uid}: {problem.reason}"
            )
        if report.nothing_added:
            self.stdout.write(
                f"Demo data already present ({report.studies_present} studies of "
                f"{opts.patients} patients); nothing added."
            )
        else:
            o = report.outcomes
            self.stdout.write(
                f"Demo data: {report.studies_added} studies added, "
                f"{report.studies_resumed} resumed, {report.studies_present} already present; "
                f"{o[Outcome.STORED]} images stored, "
                f"{o[Outcome.DUPLICATE]} already there."
            )
        self.stdout.write("Demo users (new random passwords each run):")
        for username, (role, password) in report.users.items():
            self.stdout.write(f"  {role:<10} {username:<12} {password}")
        # Staff need a second factor, and a password alone does not let anyone enrol one.
        base_url = f"http://127.0.0.1:{os.environ.get('PORT') or '8000'}"
        for username in report.users:
            link = enrolment.demo_link(User.objects.get(username=username), base_url,
                                       "make_demo_data")
            if link:
                self.stdout.write(f"  {username} sets up an authenticator app once at {link}")
        if report.problems:
            raise CommandError(f"{len(report.problems)} demo images were not stored")
