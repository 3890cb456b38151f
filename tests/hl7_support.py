"""An MLLP client for tests, and the HL7 messages an EHR sends, as text."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import hl7

from orders.mllp import END, START, Hl7Server, start

LOOPBACK = "127.0.0.1"


@contextmanager
def hl7_listener(**kwargs: object) -> Iterator[Hl7Server]:
    """The portal's HL7 listener in a thread, on a free loopback port."""
    server, thread = start(LOOPBACK, 0, **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class MllpClient:
    """One MLLP connection: send a message, read its acknowledgement."""

    def __init__(self, port: int, timeout: float = 30) -> None:
        self.sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
        self.buffer = b""

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_frame(self) -> bytes:
        while END not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed before a whole frame: {self.buffer!r}")
            self.buffer += chunk
        frame, _, self.buffer = self.buffer.partition(END)
        assert frame.startswith(START), frame
        return frame[1:]

    def send(self, message: str) -> hl7.Message:
        self.send_raw(START + message.encode("utf-8") + END)
        return hl7.parse(self.read_frame().decode("utf-8"))

    def closed_by_peer(self) -> bool:
        return self.sock.recv(1) == b""

    def close(self) -> None:
        self.sock.close()


def msa(ack: hl7.Message) -> tuple[str, str, str]:
    """(MSA-1 code, MSA-2 control id, MSA-3 text)."""
    segment = ack.segment("MSA")
    fields = [str(segment[i]) if len(segment) > i else "" for i in (1, 2, 3)]
    return fields[0], fields[1], fields[2]


def msh(kind: str, control_id: str, *, app: str = "EHR", facility: str = "SUL",
        version: str = "2.3.1") -> str:
    return (f"MSH|^~\\&|{app}|{facility}|PORTAL|PACS|20260310083000||{kind}|{control_id}|P|"
            f"{version}")


def pid(patient_id: str, name: str = "Souza^Maria^Clara", birth: str = "19800517",
        sex: str = "F") -> str:
    return f"PID|1||{patient_id}^^^HOSP^MR||{name}||{birth}|{sex}"


def orm(control_id: str, patient_id: str, accession: str, *, control: str = "NW",
        modality: str = "CT", station: str = "CT01", start: str = "202603101430",
        priority: str = "R", **kwargs: str) -> str:
    """ORM^O01 v2.3.1 as IHE RAD-4 lays it out."""
    obr = ["OBR", "1", f"P{accession}", f"F{accession}", "CTTORAX^TC de tórax", priority,
           "", "", "", "", "", "", "", "", "", "", "123^Ramos^Paulo", "", accession,
           f"RP{accession}", "", station, "", "", modality, "", "", f"^^^{start}^^{priority}"]
    return "\r".join([
        msh("ORM^O01", control_id, **kwargs), pid(patient_id),
        f"ORC|{control}|P{accession}|F{accession}||SC||^^^{start}^^{priority}",
        "|".join(obr),
    ])


def omi(control_id: str, patient_id: str, accession: str, *, modality: str = "MR",
        station: str = "MR01", start: str = "20260311090000", **kwargs: str) -> str:
    """OMI^O23 v2.5.1 (IHE RAD-4 in 2.5.1): TQ1 for the time, IPC for the procedure."""
    return "\r".join([
        msh("OMI^O23^OMI_O23", control_id, version="2.5.1", **kwargs),
        pid(patient_id, name="Lima^Jorge", birth="19651102", sex="M"),
        f"ORC|NW|P{accession}|F{accession}||SC",
        f"TQ1|1||||||{start}||S",
        f"OBR|1|P{accession}|F{accession}|RMCRANIO^RM de crânio|||||||||||||123^Ramos^Paulo",
        f"IPC|{accession}|RP{accession}|1.2.3.4.5|SPS{accession}|{modality}||Sala 2||{station}",
    ])


def adt_a08(control_id: str, patient_id: str, name: str, birth: str, sex: str,
            **kwargs: str) -> str:
    return "\r".join([msh("ADT^A08^ADT_A01", control_id, **kwargs), "EVN|A08|20260310083000",
                      pid(patient_id, name=name, birth=birth, sex=sex), "PV1|1|O"])


def adt_a40(control_id: str, surviving_id: str, prior_id: str, name: str) -> str:
    return "\r".join([msh("ADT^A40^ADT_A39", control_id), "EVN|A40|20260310083000",
                      pid(surviving_id, name=name), f"MRG|{prior_id}^^^HOSP^MR"])
