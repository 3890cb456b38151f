"""Bad input gets a failure status or a closed association: never a crashed listener, never
a half-stored object. After each mishap the listener still answers the next peer."""

from __future__ import annotations

import socket
import tempfile
import time
from collections.abc import Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config
from pynetdicom.dimse_messages import C_GET_RQ, C_STORE_RQ
from pynetdicom.dimse_primitives import C_GET, C_STORE
from pynetdicom.dsutils import encode, encode_file_meta
from pynetdicom.pdu import A_ASSOCIATE_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
)

from audit.models import AuditAction, AuditEvent, Outcome
from dimse.models import Peer
from dimse.statuses import Status
from dimse.testing import dataset_bytes, dcmtk, running_listener
from imaging.ingest import ingest
from imaging.models import Instance

pytestmark = pytest.mark.django_db(transaction=True)

NETWORK_TIMEOUT = 2.0


@pytest.fixture
def portal():
    with running_listener(network_timeout=NETWORK_TIMEOUT) as running:
        yield running


@pytest.fixture
def modality(transactional_db) -> Peer:
    return Peer.objects.create(ae_title="MODALITY", host="127.0.0.1", may_store=True,
                               may_retrieve=True)


def _still_answers(portal) -> None:
    result = dcmtk("echoscu", "-aet", "MODALITY", "-aec", "PORTAL", *portal.address(),
                   timeout=20)
    assert result.returncode == 0, result.stderr


def _stored_files(location: Path) -> list[Path]:
    return [p for p in location.rglob("*") if p.is_file()] if location.exists() else []


def _store_file(portal, path: Path) -> int:
    """Send a Part 10 file's dataset bytes as they are, however broken (chunked send)."""
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate(portal.host, portal.port, ae_title=portal.ae_title)
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(path).Status)
    finally:
        assoc.release()
        portal.wait_idle()


def _part10(tmp_path: Path, body: bytes, sop_uid: str) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = tmp_path / "broken.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + encode_file_meta(meta) + body)
    return path


@pytest.fixture
def chunked_send(monkeypatch):
    """pynetdicom's documented switch to send a file's dataset bytes without decoding."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)


def test_an_unparsable_dataset_gets_cannot_understand_and_nothing_is_stored(
    portal, modality, chunked_send, tmp_path, dicom_storage
):
    sop_uid = generate_uid()
    garbage = b"\x08\x00\x18\x00UI\x40\x00" + b"\xff" * 10 + b"\x10\x00\x10\x00PN\xff\xff"
    status = _store_file(portal, _part10(tmp_path, garbage, sop_uid))
    assert status == Status.STORE_CANNOT_UNDERSTAND
    assert not Instance.objects.exists()
    assert _stored_files(dicom_storage) == []
    entry = AuditEvent.objects.get(action=AuditAction.STORE)
    assert entry.outcome == Outcome.FAILED and entry.reason
    _still_answers(portal)


def test_a_dataset_without_its_study_uid_is_refused(
    portal, modality, chunked_send, tmp_path, dicom_storage
):
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "X"
    body = encode(ds, False, True)
    assert body is not None
    status = _store_file(portal, _part10(tmp_path, body, ds.SOPInstanceUID))
    assert status == Status.STORE_CANNOT_UNDERSTAND
    assert _stored_files(dicom_storage) == []


def test_an_abort_between_objects_keeps_what_was_stored_and_records_the_abort(
    portal, modality, ct_study, dicom_storage
):
    _, paths = ct_study
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate(portal.host, portal.port, ae_title=portal.ae_title)
    for path in paths[:3]:
        assert assoc.send_c_store(dcmread(path)).Status == Status.SUCCESS
    assoc.abort()
    portal.wait_idle()
    assert Instance.objects.count() == 3
    for instance in Instance.objects.all():
        assert (dicom_storage / instance.blob_key).stat().st_size == instance.size_bytes
    stores = AuditEvent.objects.filter(action=AuditAction.STORE)  # one per index batch
    assert sum(store.detail["instances"] for store in stores) == 3
    assert AuditEvent.objects.filter(action=AuditAction.ASSOCIATION,
                                     outcome=Outcome.FAILED).exists()
    _still_answers(portal)


class RawPeer:
    """A peer on a bare socket, to misbehave in ways a DICOM library will not."""

    def __init__(self, portal: Any, contexts: list[PresentationContext],
                 roles: Sequence[SCP_SCU_RoleSelectionNegotiation] = ()) -> None:
        self.sock = socket.create_connection((portal.host, portal.port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request = A_ASSOCIATE()
        request.application_context_name = "1.2.840.10008.3.1.1.1"
        request.calling_ae_title = "MODALITY"
        request.called_ae_title = portal.ae_title
        for number, cx in enumerate(contexts):
            cx.context_id = 2 * number + 1
        request.presentation_context_definition_list = contexts
        maximum = MaximumLengthNotification()
        maximum.maximum_length_received = 16384
        implementation = ImplementationClassUIDNotification()
        implementation.implementation_class_uid = generate_uid()
        request.user_information = [maximum, implementation, *roles]
        pdu = A_ASSOCIATE_RQ()
        pdu.from_primitive(request)
        self.sock.sendall(pdu.encode())
        accept = self.sock.recv(65536)
        assert accept[:1] == b"\x02", "association not accepted"

    def send_message(self, message: Any, context_id: int = 1, *,
                     stop_after: int | None = None) -> None:
        for number, p_data in enumerate(message.encode_msg(context_id, 16384)):
            if stop_after is not None and number >= stop_after:
                return
            pdu = P_DATA_TF()
            pdu.from_primitive(p_data)
            self.sock.sendall(pdu.encode())

    def closed_by_the_listener(self, within: float) -> bool:
        """Whether the listener closes the connection (EOF or reset) within ``within``
        seconds; anything it sends meanwhile (an A-ABORT) is read and dropped."""
        self.sock.settimeout(within)
        deadline = time.monotonic() + within
        try:
            while time.monotonic() < deadline:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
        return False

    def close(self) -> None:
        self.sock.close()


def test_a_connection_dropped_in_the_middle_of_an_object_stores_nothing(
    portal, modality, ct_study, dicom_storage, tmp_path, monkeypatch
):
    """Nothing in the archive, and no partial temporary file left behind either."""
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(incoming))
    _, paths = ct_study
    ds = dcmread(paths[0])
    peer = RawPeer(portal, [build_context(CTImageStorage, ExplicitVRLittleEndian)])
    request = C_STORE()
    request.MessageID = 1
    request.AffectedSOPClassUID = CTImageStorage
    request.AffectedSOPInstanceUID = ds.SOPInstanceUID
    request.Priority = 2
    request.DataSet = BytesIO(dataset_bytes(paths[0]))
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    peer.send_message(message, stop_after=2)  # the command and a first slice of the dataset
    peer.close()
    time.sleep(0.5)
    portal.wait_idle()
    assert not Instance.objects.exists()
    assert _stored_files(dicom_storage) == []
    assert list(incoming.iterdir()) == []
    _still_answers(portal)


def test_a_peer_that_stops_reading_during_c_get_is_disconnected_and_others_are_served(
    portal, modality, ct_study
):
    study_uid, paths = ct_study
    for path in paths:
        with open(path, "rb") as fp:
            assert ingest(fp).accepted
    role = SCP_SCU_RoleSelectionNegotiation()
    role.sop_class_uid = CTImageStorage
    role.scu_role = False
    role.scp_role = True
    peer = RawPeer(portal, [build_context(StudyRootQueryRetrieveInformationModelGet,
                                          ExplicitVRLittleEndian),
                            build_context(CTImageStorage, ExplicitVRLittleEndian)],
                   roles=[role])
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study_uid
    request = C_GET()
    request.MessageID = 1
    request.AffectedSOPClassUID = StudyRootQueryRetrieveInformationModelGet
    request.Priority = 2
    encoded = encode(identifier, False, True)
    assert encoded is not None
    request.Identifier = BytesIO(encoded)
    message = C_GET_RQ()
    message.primitive_to_message(request)
    peer.send_message(message)
    try:
        # The peer now neither reads nor answers the C-STORE sub-operation.
        started = time.monotonic()
        _still_answers(portal)
        assert time.monotonic() - started < NETWORK_TIMEOUT + 5
        assert peer.closed_by_the_listener(within=NETWORK_TIMEOUT * 5)
    finally:
        peer.close()
    portal.wait_idle()
    assert AuditEvent.objects.filter(action=AuditAction.ASSOCIATION, outcome=Outcome.FAILED,
                                     peer_ae="MODALITY").exists()
    _still_answers(portal)
