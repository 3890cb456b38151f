"""The replica bucket, through boto3: put a stream, get a stream, head, delete, list.

Thin on purpose: what goes in is already ciphertext (``replica.replicate``), and keys are
opaque. Connection errors are retried a little here (botocore's standard mode) and the rest
is the caller's to retry with backoff, so an outage fails fast instead of hanging a worker.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import IO, Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings

# An upload from a stream (ciphertext is one) buffers at most max_in_memory_upload_chunks
# parts, whatever the object's size: s3transfer's default of 10 held 100 MiB at the peak
# for a 512 MiB object; 6 parts of 8 MiB keep 4 uploads busy with about half that.
TRANSFER = TransferConfig(multipart_threshold=8 * 1024 * 1024,
                          multipart_chunksize=8 * 1024 * 1024, max_concurrency=4)
TRANSFER.max_in_memory_upload_chunks = 6
CLIENT_CONFIG = Config(retries={"max_attempts": 3, "mode": "standard"},
                       connect_timeout=5, read_timeout=60)

#: What an unreachable or misbehaving replica raises.
StoreError = (BotoCoreError, ClientError)


def configured() -> bool:
    """A replica is configured: ingest records copies and replication runs."""
    return bool(settings.REPLICA_URL)


def bucket() -> str:
    return str(settings.REPLICA_BUCKET)


def object_key(name: str) -> str:
    return f"{settings.REPLICA_PREFIX}{name}"


def client() -> Any:
    return _client(settings.REPLICA_URL, settings.REPLICA_REGION or None,
                   settings.REPLICA_ACCESS_KEY_ID or None,
                   settings.REPLICA_SECRET_ACCESS_KEY or None)


@functools.lru_cache(maxsize=4)
def _client(url: str, region: str | None, access_key: str | None, secret: str | None) -> Any:
    """One client per configuration and process (creating one costs tens of ms; clients
    are thread-safe)."""
    return boto3.client("s3", endpoint_url=url, region_name=region,
                        aws_access_key_id=access_key, aws_secret_access_key=secret,
                        config=CLIENT_CONFIG)


class SizeMismatch(ValueError):
    """The stream to upload is not the length its caller said it would be."""


#: Objects up to this size go up in one ``PutObject`` from memory: the transfer manager's
#: futures and thread hand-offs cost a small object about as much as its upload.
SINGLE_PUT_BYTES = TRANSFER.multipart_threshold


def put(key: str, stream: IO[bytes], metadata: dict[str, str], size: int | None = None) -> None:
    """Upload ``stream`` read to its end: in one request when ``size`` (the bytes the stream
    will give) is known and at most ``SINGLE_PUT_BYTES``, else in parts past the multipart
    threshold (never more than a few parts in memory)."""
    if size is not None and size <= SINGLE_PUT_BYTES:
        body = stream.read(size + 1)
        if len(body) != size:
            raise SizeMismatch(f"expected {size} bytes to upload, the stream gave "
                               f"{'more' if len(body) > size else len(body)}")
        client().put_object(Bucket=bucket(), Key=key, Body=body, Metadata=metadata)
        return
    client().upload_fileobj(stream, bucket(), key, ExtraArgs={"Metadata": metadata},
                            Config=TRANSFER)


def get(key: str) -> IO[bytes]:
    """The object's body as a stream (read it in chunks; close it when done)."""
    body: IO[bytes] = client().get_object(Bucket=bucket(), Key=key)["Body"]
    return body


def head(key: str) -> dict[str, Any] | None:
    """The object's size and metadata, or None if there is no such object."""
    try:
        found = client().head_object(Bucket=bucket(), Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    return {"size": found["ContentLength"], "metadata": found.get("Metadata", {})}


def delete(key: str) -> None:
    client().delete_object(Bucket=bucket(), Key=key)


def keys(prefix: str = "") -> Iterator[str]:
    """Every key under the replica prefix (and ``prefix`` below it), page by page."""
    pages = client().get_paginator("list_objects_v2").paginate(
        Bucket=bucket(), Prefix=object_key(prefix))
    for page in pages:
        for item in page.get("Contents", []):
            yield item["Key"]
