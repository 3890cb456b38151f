"""The clinic's EHR as a test sees it: a real MLLP server on a loopback port (python-hl7's
asyncio MLLP streams, in a thread), which parses each message it receives with python-hl7
and answers what the test tells it: AA, AE, AR, a wrong control ID, or nothing at all."""

from __future__ import annotations

import asyncio
import collections
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import hl7
from hl7.mllp import start_hl7_server

LOOPBACK = "127.0.0.1"
AA, AE, AR, CA = "AA", "AE", "AR", "CA"
WRONG_ID = "wrong-id"  # AA, but for another message
SILENT = "silent"  # reads the message, never answers
# What an AE/AR says (MSA-3), escaped as HL7 text: "Paciente não encontrado ^ PID-3".
REASON = "Paciente não encontrado \\S\\ PID-3"


@dataclass(frozen=True)
class Received:
    text: str
    message: hl7.Message

    @property
    def control_id(self) -> str:
        return str(self.message.segment("MSH")[10])


def acknowledgement(control_id: str, code: str, text: str = "") -> str:
    msh = (f"MSH|^~\\&|EHR|SUL|PORTAL||20260310120000||ACK^R01^ACK|{uuid.uuid4().hex[:20]}"
           f"|P|2.5.1")
    return f"{msh}\rMSA|{code}|{control_id}|{text}\r"


class FakeEhr:
    """Answers each message with the next of ``answers`` (then ``default``), after
    ``delay`` seconds; keeps what it received."""

    def __init__(self, port: int = 0, default: str = AA, delay: float = 0.0) -> None:
        self.port = port
        self.default = default
        self.delay = delay
        self.answers: collections.deque[str] = collections.deque()
        self.received: list[Received] = []
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._writers: list[asyncio.StreamWriter] = []
        self._thread = threading.Thread(target=self._run, name="fake-ehr", daemon=True)

    def answer(self, *answers: str) -> None:
        self.answers.extend(answers)

    def start(self) -> FakeEhr:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the fake EHR did not start")
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            start_hl7_server(self._connection, LOOPBACK, self.port, encoding="utf-8"))
        self.port = self._server.sockets[0].getsockname()[1]
        self._started.set()
        self._loop.run_forever()

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            while True:
                block = await reader.readblock()  # type: ignore[attr-defined]
                text = block.decode("utf-8")
                message = hl7.parse(text)
                self.received.append(Received(text, message))
                answer = self.answers.popleft() if self.answers else self.default
                if self.delay:
                    await asyncio.sleep(self.delay)
                if answer == SILENT:
                    await reader.read()  # until the sender gives up and closes
                    return
                control_id = str(message.segment("MSH")[10])
                if answer == WRONG_ID:
                    ack = acknowledgement("SOMETHING-ELSE", AA)
                elif answer in (AE, AR):
                    ack = acknowledgement(control_id, answer, REASON)
                else:
                    ack = acknowledgement(control_id, answer)
                writer.writeblock(ack.encode("utf-8"))  # type: ignore[attr-defined]
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()
            for writer in self._writers:
                writer.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def delivered(self, control_id: str) -> int:
        """How many times message ``control_id`` arrived."""
        return sum(1 for r in self.received if r.control_id == control_id)


@contextmanager
def fake_ehr(port: int = 0, **kwargs: object) -> Iterator[FakeEhr]:
    ehr = FakeEhr(port, **kwargs).start()  # type: ignore[arg-type]
    try:
        yield ehr
    finally:
        ehr.stop()
