"""What a replica object's plaintext is: the instance's own bytes, or their packed form.

Packing (``imaging.packing``: zstandard around the pixel data, lossless JPEG-LS for native
frames, byte-exact) comes *before* encryption, since ciphertext does not compress. Which
packing was used is in the envelope (``Envelope.packing``), so on the copy row and in the
object's own S3 metadata: a restore from the bucket alone knows how to read it. Every read
path opens an object through :func:`reader`, which decrypts and, for a packed object,
unpacks as it streams, so what every caller hashes and writes is the original bytes. An
object written before packing existed (no packing in its envelope) reads as it always did.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, Protocol, cast

from django.conf import settings

from imaging import packing

from .crypto import DecryptingReader, Envelope, InvalidObject
from .keys import KeyRing

log = logging.getLogger(__name__)

#: ``imaging.packing`` format 1.
DCMPACK1 = "dcmpack1"
KNOWN = {DCMPACK1}


class Plaintext(Protocol):
    """A stream of an object's original bytes, with their hash once read to the end."""

    def read(self, size: int = -1, /) -> bytes: ...

    @property
    def plaintext_sha256(self) -> str: ...

    @property
    def plaintext_size(self) -> int: ...


def reader(body: IO[bytes] | BinaryIO, ring: KeyRing, envelope: Envelope) -> Plaintext:
    """The original bytes of the replica object whose body is ``body``, decrypted (and
    unpacked, if it was packed) as they are read.

    Raises ``InvalidObject`` for an object that does not decrypt or unpack (also for a
    packing this code does not know) and ``KeyError`` for a key id not in the ring.
    """
    decrypting = DecryptingReader(cast(BinaryIO, body), ring, envelope)
    if not envelope.packing:
        return decrypting
    if envelope.packing not in KNOWN:
        raise InvalidObject(f"unknown replica packing {envelope.packing!r}")
    return packing.Unpacker(cast(BinaryIO, decrypting), error=InvalidObject)


@dataclass(frozen=True)
class Upload:
    """What to encrypt and upload for one instance: a stream, and how it was packed."""

    stream: IO[bytes]
    packing: str  # empty: the original bytes
    size: int  # bytes of ``stream``
    sha256: str = ""  # of a packed ``stream``, proven to unpack to the original


@contextlib.contextmanager
def for_upload(original: IO[bytes], sha256: str) -> Iterator[Upload]:
    """The form in which ``original`` (an instance's stored bytes, SHA-256 ``sha256`` on
    record) goes to the replica.

    With ``REPLICA_PACKING`` on, it is packed into a temporary file in the spool folder,
    unpacked again and hashed (``imaging.packing.pack_verified``); only a packed form that
    gives back exactly the bytes on record is used, otherwise the original is (logged).
    The temporary file is removed when the block ends.
    """
    if not settings.REPLICA_PACKING:
        yield Upload(original, "", -1)
        return
    spool = Path(settings.DICOM_SPOOL_DIR)
    spool.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=spool, prefix="replica-pack-") as spill:
        packed = packing.pack_verified(original, spill, expected_sha256=sha256)
        if packed is not None:
            yield Upload(spill, DCMPACK1, packed.packed_size, packed.packed_sha256)
            return
    log.warning("replica: an object with SHA-256 %s goes unpacked (see the packing error "
                "above)", sha256)
    original.seek(0)
    yield Upload(original, "", -1)
