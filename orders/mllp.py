"""The HL7 listener: MLLP framing (``0x0b`` message ``0x1c 0x0d``) over TCP.

Each connection is served in a thread of its own and may carry any number of messages, one
acknowledgement after each. A connection that sends something other than a frame, or a
frame larger than ``HL7_MAX_MESSAGE_BYTES``, gets one framed ``AR`` saying why and is
closed: after bytes that are not MLLP nothing more on it can be trusted to be a message.

:func:`exchange` is the other side, for results the portal sends: one message on a
connection of its own, one acknowledgement read back (python-hl7's ``MLLPClient`` has no
timeouts and reads a single ``recv``, which may hold part of a frame).
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
from collections.abc import Iterator

from django.conf import settings
from django.db import close_old_connections, connections

from . import handling
from .hl7_messages import decode

log = logging.getLogger(__name__)

START = b"\x0b"
END = b"\x1c\x0d"
RECEIVE = 64 * 1024
_BETWEEN_FRAMES = b"\r\n\t "


class FramingError(ValueError):
    def __init__(self, reason: str, data: bytes) -> None:
        super().__init__(reason)
        self.reason = reason
        self.data = data


def frame(text: str) -> bytes:
    return START + text.encode("utf-8") + END


def frames(sock: socket.socket, max_bytes: int) -> Iterator[bytes]:
    """The messages on ``sock``, unframed, until the peer closes; :class:`FramingError`
    for bytes outside a frame, a frame too large, or a connection closed inside a frame."""
    buffer = bytearray()
    while True:
        while buffer:
            if buffer[0] in _BETWEEN_FRAMES:
                del buffer[0]
                continue
            if buffer[:1] != START:
                raise FramingError("not MLLP: a message must be framed by 0x0b ... 0x1c 0x0d",
                                   bytes(buffer))
            end = buffer.find(END)
            if end < 0:
                if len(buffer) > max_bytes + 1:
                    raise FramingError(f"message larger than {max_bytes} bytes",
                                       bytes(buffer[:1024]))
                break
            if end - 1 > max_bytes:
                raise FramingError(f"message larger than {max_bytes} bytes",
                                   bytes(buffer[:1024]))
            message = bytes(buffer[1:end])
            del buffer[:end + len(END)]
            yield message
        chunk = sock.recv(RECEIVE)
        if not chunk:
            if buffer:
                raise FramingError("connection closed inside a message", bytes(buffer[:1024]))
            return
        buffer += chunk


class _Connection(socketserver.BaseRequestHandler):
    server: Hl7Server

    def handle(self) -> None:
        sock: socket.socket = self.request
        address, port = self.client_address[0], int(self.client_address[1])
        sock.settimeout(self.server.network_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            close_old_connections()
            for message in frames(sock, self.server.max_bytes):
                answer = handling.receive(decode(message), address, port)
                sock.sendall(frame(answer.ack))
        except FramingError as exc:
            answer = handling.refuse_framing(exc.data, address, port, exc.reason)
            try:
                sock.sendall(frame(answer.ack))
            except OSError:
                pass
        except (TimeoutError, OSError) as exc:
            log.info("HL7 connection from %s ended: %s", address, exc)
        finally:
            connections.close_all()


class Hl7Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], *, max_bytes: int | None = None,
                 network_timeout: float | None = None) -> None:
        self.max_bytes = max_bytes or settings.HL7_MAX_MESSAGE_BYTES
        self.network_timeout = network_timeout or settings.HL7_NETWORK_TIMEOUT
        super().__init__(address, _Connection)

    @property
    def port(self) -> int:
        return int(self.server_address[1])


def start(host: str, port: int, *, max_bytes: int | None = None,
          network_timeout: float | None = None) -> tuple[Hl7Server, threading.Thread]:
    """Listen on ``host:port`` (0: a free port) in a thread; stop with ``server.shutdown()``
    then ``server.server_close()``."""
    server = Hl7Server((host, port), max_bytes=max_bytes, network_timeout=network_timeout)
    thread = threading.Thread(target=server.serve_forever, name="hl7-listener", daemon=True)
    thread.start()
    return server, thread


class NoAcknowledgement(OSError):
    """The peer closed the connection, or sent no whole frame, before acknowledging."""


def exchange(host: str, port: int, text: str, *, connect_timeout: float,
             ack_timeout: float, max_bytes: int | None = None) -> str:
    """Send ``text`` framed to ``host:port`` and return the first frame it answers, as
    text; :class:`TimeoutError` when nothing comes within ``ack_timeout`` seconds,
    :class:`OSError` when the peer cannot be reached, :class:`FramingError` for an answer
    that is not MLLP."""
    with socket.create_connection((host, port), timeout=connect_timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(ack_timeout)
        sock.sendall(frame(text))
        for answer in frames(sock, max_bytes or settings.HL7_MAX_MESSAGE_BYTES):
            return decode(answer)
    raise NoAcknowledgement("the peer closed the connection without acknowledging")
