"""The settings the benchmarks give a portal with a replica (a moto S3 server of theirs and
a fresh encryption key), shared by ``bench/dimse.py`` and ``bench/dicomweb.py``."""

from __future__ import annotations

import base64
import os


def replica_env(endpoint: str, redis_url: str) -> dict[str, str]:
    """A portal's settings for a replica at ``endpoint`` with tasks queued to ``redis_url``."""
    return {"REPLICA_URL": endpoint, "REPLICA_BUCKET": "bench-replica",
            "REPLICA_REGION": "us-east-1", "REPLICA_ACCESS_KEY_ID": "testing",
            "REPLICA_SECRET_ACCESS_KEY": "testing",
            "REPLICA_KEYS": "bench:" + base64.b64encode(os.urandom(32)).decode(),
            "REPLICA_CURRENT_KEY": "bench", "REDIS_URL": redis_url,
            "CELERY_BROKER_URL": redis_url}
