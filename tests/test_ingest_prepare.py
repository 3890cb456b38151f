"""A server loads, as it starts, what its first stored object would make it load: with a
replica configured, the replica's tasks and Celery's producers for the broker (about 0.15 s
of CPU that a listener's first association would otherwise wait for); without one, none of
it (an archive with no replica never loads boto3)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests import replica_support
from tests.celery_support import REDIS_URL

ROOT = Path(__file__).resolve().parent.parent
PROBE = """
import json, sys
import django
django.setup()
from imaging import ingest
before = set(sys.modules)
ingest.prepare()
from portal.celery import app
print(json.dumps({"loaded": sorted(set(sys.modules) - before),
                  "producers": "_producer_pool" in vars(app.amqp)
                               if "amqp" in vars(app) else False}))
"""


def prepared(tmp_path: Path, **extra: str) -> dict[str, object]:
    """What ``ingest.prepare()`` loaded in a fresh interpreter with these settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("REPLICA_", "CELERY_", "S3_")) and k not in (
               "REDIS_URL", "CACHE_URL", "DATABASE_URL", "TASKS_IN_PROCESS")}
    env.update(DJANGO_SETTINGS_MODULE="portal.settings", DATA_DIR=str(tmp_path),
               LOG_LEVEL="WARNING", **extra)
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, check=True,
                          capture_output=True, text=True)
    found: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def test_with_a_replica_and_a_broker_the_tasks_and_producers_are_ready_before_any_object(
        tmp_path, settings):
    broker = REDIS_URL or "redis://127.0.0.1:1/0"  # nothing is sent: no server needed
    env = replica_support.configure(settings, "http://127.0.0.1:1", "bucket")
    found = prepared(tmp_path, **env, CELERY_BROKER_URL=broker, REDIS_URL=broker)
    loaded = found["loaded"]
    assert isinstance(loaded, list)
    assert "replica.tasks" in loaded and "kombu.transport.redis" in loaded
    assert found["producers"] is True


def test_without_a_replica_nothing_of_it_is_loaded(tmp_path):
    loaded = prepared(tmp_path, TASKS_IN_PROCESS="1")["loaded"]
    assert isinstance(loaded, list)
    assert not [m for m in loaded if m.startswith(("replica", "boto"))]
