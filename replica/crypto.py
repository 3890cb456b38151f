"""Client-side envelope encryption of replica objects: the cloud never sees patient data.

Each object gets its own random 256-bit data key (DEK), wrapped by a key-encryption key
(KEK, ``replica.keys``); the payload is sealed with AES-256-GCM in segments, so objects of
any size stream through in bounded memory (a few segments) in both directions.

Format, version 1
-----------------
Object body
    Only the sealed segments, back to back; no header in the body. Every plaintext segment
    has ``segment_size`` bytes except the last, which has 0 to ``segment_size`` (an empty
    object is one empty last segment). Each sealed segment is its ciphertext followed by
    the 16-byte GCM tag, so the body is ``ciphertext_size(plaintext_size, segment_size)``.
Segment nonce (12 bytes), as in STREAM (Hoang, Reyhanitabar, Rogaway, Vizár 2015) and
Tink's streaming AEAD
    7-byte random ``nonce_prefix`` || 4-byte big-endian segment number from 0 || 1 byte,
    1 for the last segment and 0 otherwise. Reordered or dropped segments fail (wrong
    number), a truncated object fails (its new final segment was not sealed as last), an
    extended one fails (the true last segment is no longer read as last).
Segment associated data
    ``b"portal-replica/segment\\0"`` || format version (1 byte) || ``segment_size``
    (4 bytes big-endian). The key id is deliberately not in it: it is bound to the wrapped
    DEK instead, so that key rotation (``rewrap``) changes only the envelope and never the
    payload. A swapped key id or wrapped key fails unwrapping; another object's DEK or
    nonce prefix fails every segment.
Wrapped key (60 bytes)
    12-byte random nonce || AES-256-GCM(KEK, DEK) with associated data
    ``b"portal-replica/dek\\0"`` || format version (1 byte) || key id (ASCII). Random
    nonces under one KEK are safe for about 2**32 wraps (NIST SP 800-38D); rotate the KEK
    well before that many objects. AES-GCM rather than RFC 3394 key wrap because it binds
    the key id and version as associated data.
Envelope
    Key id, wrapped key, nonce prefix and segment size: everything needed to decrypt, kept
    both in the database row and in the object's S3 user metadata (``to_metadata``), so the
    replica can be read back even if the database is lost. The metadata holds no patient
    data; the DEK never leaves this process unwrapped. ``packing`` names the form of the
    plaintext when it is not the object's own bytes (``replica.payload``: ``dcmpack1`` is
    ``imaging.packing``'s format 1); empty, and absent from the metadata, for the original
    bytes, as every object written before packing existed.

Streaming means plaintext reaches the reader before the whole object has been
authenticated: a later segment can still raise ``InvalidObject``. Callers write what
``DecryptingReader`` yields to a temporary file and use it only after a clean end of
stream (and, better, after comparing ``plaintext_sha256`` with the hash on record, which
also catches a whole object swapped for another valid one).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import io
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from replica.keys import KEY_BYTES, KEY_ID, KeyRing

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

FORMAT_VERSION = 1
CIPHER = "AES-256-GCM-STREAM"
TAG_BYTES = 16
NONCE_PREFIX_BYTES = 7
WRAP_NONCE_BYTES = 12
WRAPPED_KEY_BYTES = WRAP_NONCE_BYTES + KEY_BYTES + TAG_BYTES
DEFAULT_SEGMENT_SIZE = 1 << 20
# The reader holds about two segments: the upper bound keeps a forged segment size in the
# metadata from asking for gigabytes of memory.
MIN_SEGMENT_SIZE = 64
MAX_SEGMENT_SIZE = 64 << 20
MAX_SEGMENTS = 1 << 32  # the 4-byte segment number

SEGMENT_AAD = b"portal-replica/segment\0"
DEK_AAD = b"portal-replica/dek\0"

# S3 user metadata keys (S3 lowercases them; boto3 returns them without x-amz-meta-).
META_FORMAT = "replica-format"
META_CIPHER = "replica-cipher"
META_KEY_ID = "replica-key-id"
META_WRAPPED_KEY = "replica-wrapped-key"
META_NONCE_PREFIX = "replica-nonce-prefix"
META_SEGMENT_SIZE = "replica-segment-size"
META_PACKING = "replica-packing"
PACKING_NAME = re.compile(r"[a-z0-9-]{1,32}")


class InvalidObject(Exception):
    """The object or its envelope is not what was encrypted: altered, truncated, extended,
    reordered, or under another key. Never read as plaintext."""


@dataclass(frozen=True)
class Envelope:
    key_id: str
    wrapped_key: bytes
    nonce_prefix: bytes
    segment_size: int
    packing: str = ""  # the plaintext's form: empty for the object's own bytes

    def __post_init__(self) -> None:
        if self.packing and not PACKING_NAME.fullmatch(self.packing):
            raise ValueError(f"envelope packing {self.packing!r} is not a packing name")
        if not KEY_ID.fullmatch(self.key_id):
            raise ValueError(f"envelope key id {self.key_id!r} is not a valid key id")
        if len(self.wrapped_key) != WRAPPED_KEY_BYTES:
            raise ValueError(f"a wrapped key is {WRAPPED_KEY_BYTES} bytes, "
                             f"not {len(self.wrapped_key)}")
        if len(self.nonce_prefix) != NONCE_PREFIX_BYTES:
            raise ValueError(f"a nonce prefix is {NONCE_PREFIX_BYTES} bytes, "
                             f"not {len(self.nonce_prefix)}")
        if not MIN_SEGMENT_SIZE <= self.segment_size <= MAX_SEGMENT_SIZE:
            raise ValueError(f"segment size {self.segment_size} is outside "
                             f"{MIN_SEGMENT_SIZE}..{MAX_SEGMENT_SIZE}")

    def to_metadata(self) -> dict[str, str]:
        meta = {
            META_FORMAT: str(FORMAT_VERSION),
            META_CIPHER: CIPHER,
            META_KEY_ID: self.key_id,
            META_WRAPPED_KEY: base64.b64encode(self.wrapped_key).decode("ascii"),
            META_NONCE_PREFIX: base64.b64encode(self.nonce_prefix).decode("ascii"),
            META_SEGMENT_SIZE: str(self.segment_size),
        }
        if self.packing:
            meta[META_PACKING] = self.packing
        return meta

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str]) -> Envelope:
        """The envelope in an object's S3 metadata; ``InvalidObject`` if it is not one."""
        meta = {name.lower(): value for name, value in meta.items()}
        try:
            if meta[META_FORMAT] != str(FORMAT_VERSION) or meta[META_CIPHER] != CIPHER:
                raise InvalidObject(
                    f"unknown replica format {meta[META_FORMAT]!r}/{meta[META_CIPHER]!r}")
            size = meta[META_SEGMENT_SIZE]
            if not size.isascii() or not size.isdigit():
                raise InvalidObject(f"segment size {size!r} is not a number")
            return cls(
                key_id=meta[META_KEY_ID],
                wrapped_key=base64.b64decode(meta[META_WRAPPED_KEY], validate=True),
                nonce_prefix=base64.b64decode(meta[META_NONCE_PREFIX], validate=True),
                segment_size=int(size),
                packing=meta.get(META_PACKING, ""),
            )
        except KeyError as missing:
            raise InvalidObject(f"replica metadata lacks {missing}") from None
        except (binascii.Error, ValueError) as error:
            raise InvalidObject(f"replica metadata is malformed: {error}") from None


def _wrap_aad(key_id: str) -> bytes:
    return DEK_AAD + bytes([FORMAT_VERSION]) + key_id.encode("ascii")


def _wrap(dek: bytes, key_id: str, kek: bytes) -> bytes:
    nonce = os.urandom(WRAP_NONCE_BYTES)
    return nonce + AESGCM(kek).encrypt(nonce, dek, _wrap_aad(key_id))


def _unwrap(envelope: Envelope, ring: KeyRing) -> bytes:
    """The DEK; ``KeyError`` if the key id is not in the ring (a configuration problem, not
    a damaged object), ``InvalidObject`` if it does not unwrap under that KEK."""
    kek = ring.kek(envelope.key_id)
    nonce = envelope.wrapped_key[:WRAP_NONCE_BYTES]
    try:
        return AESGCM(kek).decrypt(
            nonce, envelope.wrapped_key[WRAP_NONCE_BYTES:], _wrap_aad(envelope.key_id))
    except InvalidTag:
        raise InvalidObject(
            f"the data key does not unwrap under replica key {envelope.key_id!r}: "
            "another key under that id, or an altered envelope") from None


def new_envelope(ring: KeyRing, segment_size: int = DEFAULT_SEGMENT_SIZE
                 ) -> tuple[Envelope, bytes]:
    """A fresh DEK for one object, wrapped by the ring's current KEK: (envelope, DEK)."""
    dek = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
    envelope = Envelope(
        key_id=ring.current_id,
        wrapped_key=_wrap(dek, ring.current_id, ring.kek(ring.current_id)),
        nonce_prefix=os.urandom(NONCE_PREFIX_BYTES),
        segment_size=segment_size,
    )
    return envelope, dek


def rewrap(envelope: Envelope, ring: KeyRing) -> Envelope:
    """The same DEK wrapped by the ring's current KEK: rotation without touching payloads.

    Returns ``envelope`` itself when it is already under the current key, so running a
    rotation twice writes nothing the second time.
    """
    if envelope.key_id == ring.current_id:
        return envelope
    dek = _unwrap(envelope, ring)
    return dataclasses.replace(
        envelope, key_id=ring.current_id,
        wrapped_key=_wrap(dek, ring.current_id, ring.kek(ring.current_id)))


def ciphertext_size(plaintext_size: int, segment_size: int) -> int:
    if plaintext_size < 0 or segment_size < 1:
        raise ValueError("sizes must be positive")
    segments = max(1, -(-plaintext_size // segment_size))
    return plaintext_size + segments * TAG_BYTES


def _segment_aad(envelope: Envelope) -> bytes:
    return SEGMENT_AAD + bytes([FORMAT_VERSION]) + envelope.segment_size.to_bytes(4, "big")


def _nonce(prefix: bytes, number: int, last: bool) -> bytes:
    return prefix + number.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


class _SegmentReader(io.RawIOBase):
    """A readable stream that turns its source into segments one at a time.

    ``readinto`` fills the whole buffer unless the stream ends: boto3 (s3transfer) takes a
    short read of a non-seekable stream for its end, and would then read the rest at once.
    """

    def __init__(self, source: BinaryIO, envelope: Envelope, chunk: int) -> None:
        super().__init__()
        self._source = source
        self._envelope = envelope
        self._aad = _segment_aad(envelope)
        self._chunk = chunk  # bytes of source per segment
        # Source read ahead, into one buffer for the object's life: one segment and one byte.
        self._pending = bytearray(chunk + 1)
        self._filled = 0
        self._readinto = getattr(source, "readinto", None)
        self._out = memoryview(b"")  # the current segment, not yet returned
        self._number = 0
        self._source_done = False
        self._finished = False  # the last segment has been produced
        self._hash = hashlib.sha256()
        self.plaintext_size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        with memoryview(buffer) as raw, raw.cast("B") as view:
            written = 0
            while written < len(view):
                if not self._out:
                    if self._finished:
                        break
                    self._out = memoryview(self._next_segment())
                count = min(len(view) - written, len(self._out))
                view[written:written + count] = self._out[:count]
                self._out = self._out[count:]
                written += count
            return written

    def _next_segment(self) -> bytes:
        # One byte of look-ahead tells the last segment from a full one followed by more.
        while self._filled <= self._chunk and not self._source_done:
            self._source_done = not self._read_source()
        last = self._filled <= self._chunk
        size = self._filled if last else self._chunk
        if self._number >= MAX_SEGMENTS:
            self._fail("more segments than a 4-byte segment number can count")
        nonce = _nonce(self._envelope.nonce_prefix, self._number, last)
        with memoryview(self._pending) as pending, pending[:size] as segment:
            result = self._transform(nonce, segment, last)
        left = self._filled - size
        self._pending[:left] = self._pending[size:self._filled]
        self._filled = left
        self._number += 1
        self._finished = last
        return result

    def _read_source(self) -> int:
        """Read more of the source straight into the look-ahead buffer (no copy when the
        source has ``readinto``, as files, BytesIO and boto3's StreamingBody do)."""
        if self._readinto is not None:
            try:
                with memoryview(self._pending) as pending, pending[self._filled:] as free:
                    count = self._readinto(free) or 0
            except (NotImplementedError, io.UnsupportedOperation):  # a read()-only source
                self._readinto = None
                return self._read_source()
        else:
            data = self._source.read(len(self._pending) - self._filled)
            count = len(data)
            self._pending[self._filled:self._filled + count] = data
        self._filled += count
        return count

    def _transform(self, nonce: bytes, segment: memoryview, last: bool) -> bytes:
        raise NotImplementedError

    def _fail(self, reason: str) -> NoReturn:
        raise ValueError(reason)

    @property
    def plaintext_sha256(self) -> str:
        """Hex SHA-256 of the whole plaintext; only once the stream has been read to its
        end (a partial hash compared with the one on record would mislead)."""
        if not self._finished:
            raise RuntimeError("plaintext_sha256 is known only after the end of the stream")
        return self._hash.hexdigest()


class EncryptingReader(_SegmentReader):
    """Plaintext in (``source``), the sealed object out; for ``upload_fileobj``."""

    def __init__(self, source: BinaryIO, dek: bytes, envelope: Envelope) -> None:
        if len(dek) != KEY_BYTES:
            raise ValueError(f"a data key is {KEY_BYTES} bytes")
        super().__init__(source, envelope, envelope.segment_size)
        self._aead = AESGCM(dek)

    def _transform(self, nonce: bytes, segment: memoryview, last: bool) -> bytes:
        self._hash.update(segment)
        self.plaintext_size += len(segment)
        return self._aead.encrypt(nonce, segment, self._aad)

    def _fail(self, reason: str) -> NoReturn:
        raise ValueError(f"object too large for segment size {self._envelope.segment_size}: "
                         f"{reason}")


class DecryptingReader(_SegmentReader):
    """The sealed object in (a file, a boto3 ``StreamingBody``), plaintext out.

    Raises ``InvalidObject`` at the first segment that fails authentication and on every
    read after it; ``KeyError`` if the envelope's key id is not in the ring.
    """

    def __init__(self, source: BinaryIO, ring: KeyRing, envelope: Envelope) -> None:
        super().__init__(source, envelope, envelope.segment_size + TAG_BYTES)
        self._aead = AESGCM(_unwrap(envelope, ring))
        self._failure: InvalidObject | None = None

    def _next_segment(self) -> bytes:
        if self._failure is not None:
            raise self._failure
        try:
            return super()._next_segment()
        except InvalidObject as failure:
            self._failure = failure
            raise

    def _transform(self, nonce: bytes, segment: memoryview, last: bool) -> bytes:
        if len(segment) < TAG_BYTES:
            self._fail("it ends inside a segment's tag (truncated or empty)")
        try:
            plaintext = self._aead.decrypt(nonce, segment, self._aad)
        except InvalidTag:
            self._fail(f"segment {self._number} fails authentication (altered, reordered, "
                       "truncated, extended or under another data key)")
        self._hash.update(plaintext)
        self.plaintext_size += len(plaintext)
        return plaintext

    def _fail(self, reason: str) -> NoReturn:
        raise InvalidObject(f"replica object is not what was encrypted: {reason}")
