"""The settings the benchmarks give a portal with a replica (a moto S3 server of theirs and
a fresh encryption key), shared by ``bench/dimse.py`` and ``bench/dicomweb.py``."""

from __future__ import annotations

import base64
import os


def broker_env(redis_url: str) -> dict[str, str]:
    """A portal's cache and Celery broker at ``redis_url``, with no replica: the side the
    replica is compared with, so that the replica is the one thing that differs (the
    cache on Redis instead of in-process memory moved C-STORE by as much as the replica)."""
    return {"REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url}


def replica_env(endpoint: str, redis_url: str) -> dict[str, str]:
    """:func:`broker_env` and a replica at ``endpoint``, its tasks queued to ``redis_url``."""
    return {**broker_env(redis_url), "REPLICA_URL": endpoint, "REPLICA_BUCKET": "bench-replica",
            "REPLICA_REGION": "us-east-1", "REPLICA_ACCESS_KEY_ID": "testing",
            "REPLICA_SECRET_ACCESS_KEY": "testing",
            "REPLICA_KEYS": "bench:" + base64.b64encode(os.urandom(32)).decode(),
            "REPLICA_CURRENT_KEY": "bench"}
