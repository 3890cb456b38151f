"""A replica for tests: a fresh bucket on the module's moto server, and the settings that
point the portal (and a worker's environment) at it; studies stored with verified replica
copies, and eviction of their local files."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from imaging.ingest import ingest
from imaging.models import Instance, Patient
from replica import evict
from replica.models import Copy
from tests.conftest import story_clinic
from tests.s3_support import (  # noqa: F401 - s3_endpoint is a fixture
    CREDENTIALS,
    REGION,
    s3_endpoint,
)

KEYS = f"k1:{base64.b64encode(b'k' * 32).decode()}"


def new_bucket(url: str) -> Any:
    s3 = boto3.resource("s3", endpoint_url=url, region_name=REGION, **CREDENTIALS)
    return s3.create_bucket(Bucket=f"replica-{uuid.uuid4().hex[:12]}")


def configure(settings: Any, url: str, bucket: str, keys: str = KEYS) -> dict[str, str]:
    """The replica settings, set on ``settings`` and returned as a worker's environment."""
    env = {
        "REPLICA_URL": url, "REPLICA_BUCKET": bucket, "REPLICA_REGION": REGION,
        "REPLICA_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
        "REPLICA_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
        "REPLICA_PREFIX": "objects/", "REPLICA_KEYS": keys, "REPLICA_CURRENT_KEY": "k1",
    }
    for name, value in env.items():
        setattr(settings, name, value)
    return env


@pytest.fixture
def replica(s3_endpoint: str, settings: Any) -> Iterator[Any]:  # noqa: F811
    """A configured replica; the bucket (a boto3 Bucket) is emptied and removed after."""
    bucket = new_bucket(s3_endpoint)
    configure(settings, s3_endpoint, bucket.name)
    yield bucket
    bucket.objects.all().delete()
    bucket.delete()


def store_replicated(paths: list[Path], capture: Any) -> list[Instance]:
    """Store files through the one ingest path, their on-commit work (replication) run as
    after a commit; every replica copy ends verified. The patients are the story clinic's."""
    stored = []
    for path in paths:
        with capture(execute=True), path.open("rb") as fp:
            result = ingest(fp, source="test")
        assert result.accepted and result.instance_id is not None, result.reason
        stored.append(Instance.objects.get(pk=result.instance_id))
    Patient.objects.filter(studies__series__instances__in=stored).update(clinic=story_clinic())
    assert not Copy.objects.filter(instance__in=stored, tier=Copy.Tier.REPLICA).exclude(
        state=Copy.State.VERIFIED).exists()
    return stored


def evict_all(instances: list[Instance]) -> None:
    """Evict these instances' local files as an eviction run would (each one checked)."""
    for copy in Copy.objects.filter(instance__in=instances, tier=Copy.Tier.LOCAL):
        assert copy.written_at is not None
        assert evict.evict_copy(copy.pk, copy.written_at)


def spills(location: Path) -> list[Path]:
    """Partial recalls left in the storage (there should be none once reads are done)."""
    return list(location.rglob(".recall-*")) if location.exists() else []
