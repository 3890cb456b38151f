"""What client-side encryption of replica objects costs: encrypt and decrypt MB/s.

    .venv/bin/python bench/replica_crypto.py [--mb 512] [--segment-kib 1024] [--chunk-mib 8]

A generated stream of ``--mb`` MiB (never held in memory) is encrypted, then the ciphertext
stream decrypted, each read in ``--chunk-mib`` reads as boto3's transfer manager reads
(8 MiB by default). Prints MiB/s each way, the SHA-256 of the stream checked end to end,
and tracemalloc's peak of a separate pass through both (tracemalloc slows allocation, so
the timed passes run without it).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from replica.crypto import DecryptingReader, EncryptingReader, new_envelope
from replica.keys import KeyRing


class Generated(io.RawIOBase):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.remaining = size
        self.block = os.urandom(1 << 20)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer):  # type: ignore[no-untyped-def]
        count = min(len(buffer), self.remaining, len(self.block))
        memoryview(buffer).cast("B")[:count] = self.block[:count]
        self.remaining -= count
        return count


def drain(reader: io.RawIOBase, chunk: int) -> int:
    total = 0
    while data := reader.read(chunk):
        total += len(data)
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=512)
    parser.add_argument("--segment-kib", type=int, default=1024)
    parser.add_argument("--chunk-mib", type=int, default=8)
    args = parser.parse_args()
    size, chunk = args.mb << 20, args.chunk_mib << 20
    ring = KeyRing({"bench": os.urandom(32)}, "bench")
    envelope, dek = new_envelope(ring, args.segment_kib << 10)

    started = time.perf_counter()
    drain(EncryptingReader(Generated(size), dek, envelope), chunk)  # type: ignore[arg-type]
    encrypt_s = time.perf_counter() - started
    # Decrypting reads from a fresh encryption: time the pair, subtract the encryption.
    started = time.perf_counter()
    encrypting = EncryptingReader(Generated(size), dek, envelope)  # type: ignore[arg-type]
    decrypting = DecryptingReader(encrypting, ring, envelope)  # type: ignore[arg-type]
    assert drain(decrypting, chunk) == size
    both_s = time.perf_counter() - started
    assert decrypting.plaintext_sha256 == encrypting.plaintext_sha256
    decrypt_s = max(both_s - encrypt_s, 1e-9)

    buffer = bytearray(1 << 20)
    tracemalloc.start()
    decrypting = DecryptingReader(
        EncryptingReader(Generated(size), dek, envelope), ring, envelope)  # type: ignore[arg-type]
    while decrypting.readinto(buffer):
        pass
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    mib = size / 2**20
    print(f"{args.mb} MiB, {args.segment_kib} KiB segments, {args.chunk_mib} MiB reads")
    print(f"encrypt  {mib / encrypt_s:8.0f} MiB/s")
    print(f"decrypt  {mib / decrypt_s:8.0f} MiB/s")
    print(f"peak (encrypt and decrypt chained, 1 MiB reads): {peak / 2**20:.1f} MiB; "
          f"sha256 {decrypting.plaintext_sha256[:16]}...")


if __name__ == "__main__":
    main()
