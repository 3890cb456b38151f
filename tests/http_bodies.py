"""The body of a test client's response, whether Django streamed it or not: small WADO-RS
answers (one frame) are whole ``HttpResponse`` bodies, large ones are streamed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast


def body(response: Any) -> bytes:
    if response.streaming:
        return b"".join(cast(Iterator[bytes], response.streaming_content))
    return bytes(response.content)
