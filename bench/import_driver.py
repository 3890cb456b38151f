"""Run ``import_dicom`` in-process and time it without Python and Django start-up.

``bench/ingest.py`` runs this as a subprocess in a fresh ``DATA_DIR``::

    python bench/import_driver.py FOLDER [--workers N] [--profile OUT.prof]

Start-up (interpreter, ``django.setup()``, loading the command and its imports, opening the
database connection) is timed apart from the command itself. Prints one JSON line:
``{"setup_s": ..., "import_s": ..., "output": ...}``. With ``--profile`` the command runs
under cProfile (use ``--workers 1``: worker processes are not profiled).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    started = time.perf_counter()
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args()

    sys.path.insert(0, str(REPO))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()
    from django.core.management import call_command, load_command_class
    from django.db import connection

    command = load_command_class("imaging", "import_dicom")
    connection.ensure_connection()
    setup_s = time.perf_counter() - started

    out = io.StringIO()
    profiler = cProfile.Profile() if args.profile else None
    begin = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    call_command(
        command, str(args.folder), workers=args.workers, no_progress=True, stdout=out
    )
    if profiler is not None:
        profiler.disable()
    import_s = time.perf_counter() - begin
    if profiler is not None:
        profiler.dump_stats(args.profile)
    print(json.dumps({"setup_s": setup_s, "import_s": import_s, "output": out.getvalue()}))


if __name__ == "__main__":
    main()
