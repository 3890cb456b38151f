"""C-MOVE and C-GET: every object comes back byte for byte, with exact sub-operation counts."""

from __future__ import annotations

import gc
import os
import time
import warnings
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from audit.models import AuditAction, AuditEvent, Outcome
from dimse.models import Peer
from dimse.statuses import Status
from dimse.testing import dataset_bytes, dcmtk, storescp
from imaging.ingest import ingest
from imaging.models import Instance

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.pynetdicom_as_is_too]


@pytest.fixture
def study(transactional_db, ct_study):
    study_uid, paths = ct_study
    for path in paths:
        with open(path, "rb") as fp:
            assert ingest(fp).accepted
    return study_uid, paths


def _by_uid(paths) -> dict[str, Path]:
    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): Path(p) for p in paths}


def _identifier(study_uid: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = study_uid
    return ds


def test_movescu_to_a_known_destination_sends_every_file_unchanged(
    portal, workstation, study, tmp_path, dest_port
):
    study_uid, paths = study
    with storescp(tmp_path / "dest", port=dest_port):
        result = dcmtk("movescu", "-v", "-aet", "DEST", "-aec", "PORTAL", "-aem", "DEST", "-S",
                       "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
                       *portal.address())
    assert result.returncode == 0, result.stderr
    received = _by_uid((tmp_path / "dest").iterdir())
    sent = _by_uid(paths)
    assert received.keys() == sent.keys()
    for uid, path in sent.items():
        assert dataset_bytes(received[uid]) == dataset_bytes(path)


def test_getscu_brings_every_file_back_unchanged(portal, workstation, study, tmp_path):
    study_uid, paths = study
    out = tmp_path / "got"
    out.mkdir()
    result = dcmtk("getscu", "-v", "-aet", "DEST", "-aec", "PORTAL", "-S", "-od", str(out),
                   "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
                   *portal.address(), cwd=out)
    assert result.returncode == 0, result.stderr
    received = _by_uid(out.iterdir())
    sent = _by_uid(paths)
    assert received.keys() == sent.keys()
    for uid, path in sent.items():
        assert dataset_bytes(received[uid]) == dataset_bytes(path)


def _move(portal, identifier: Dataset, destination: str, aet: str = "DEST"):
    ae = AE(ae_title=aet)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate(portal.host, portal.port, ae_title=portal.ae_title)
    assert assoc.is_established
    try:
        return [status for status, _ in assoc.send_c_move(
            identifier, destination, StudyRootQueryRetrieveInformationModelMove)]
    finally:
        assoc.release()


def _get(portal, identifier: Dataset, aet: str = "DEST"):
    received: list[str] = []

    def on_store(event):
        received.append(str(event.request.AffectedSOPInstanceUID))
        # pynetdicom leaves the temporary file of a C-STORE received by an SCU for its own
        # C-GET (the listener's settings stream C-STORE bodies to files in this process).
        Path(event.dataset_path).unlink(missing_ok=True)
        return Status.SUCCESS

    ae = AE(ae_title=aet)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate(portal.host, portal.port, ae_title=portal.ae_title,
                         ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    try:
        answers = [(status, ds) for status, ds in assoc.send_c_get(
            identifier, StudyRootQueryRetrieveInformationModelGet)]
    finally:
        assoc.release()
    return answers, received


def test_move_reports_a_pending_response_per_object_then_success_with_the_counts(
    portal, workstation, study, tmp_path, dest_port
):
    study_uid, paths = study
    with storescp(tmp_path / "dest", port=dest_port):
        statuses = _move(portal, _identifier(study_uid), "DEST")
    pending, final = statuses[:-1], statuses[-1]
    assert [s.Status for s in pending] == [Status.PENDING] * len(paths)
    assert [s.NumberOfRemainingSuboperations for s in pending] == list(
        range(len(paths) - 1, -1, -1))
    assert final.Status == Status.SUCCESS
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations,
            final.NumberOfWarningSuboperations) == (len(paths), 0, 0)


def test_move_to_an_unknown_destination_answers_move_destination_unknown(
    portal, workstation, study
):
    study_uid, _ = study
    [final] = _move(portal, _identifier(study_uid), "NOWHERE")
    assert final.Status == Status.MOVE_DESTINATION_UNKNOWN
    entry = AuditEvent.objects.filter(action=AuditAction.RETRIEVE).get()
    assert entry.outcome == Outcome.DENIED


def test_get_of_a_study_with_an_unreadable_object_answers_a_warning_with_exact_counts(
    portal, workstation, study, dicom_storage
):
    study_uid, paths = study
    lost = Instance.objects.order_by("pk").first()
    assert lost is not None
    (dicom_storage / lost.blob_key).unlink()
    answers, received = _get(portal, _identifier(study_uid))
    final_status, final_identifier = answers[-1]
    assert final_status.Status == 0xB000  # Warning: sub-operations complete, one or more failed
    assert (final_status.NumberOfCompletedSuboperations,
            final_status.NumberOfFailedSuboperations,
            final_status.NumberOfWarningSuboperations) == (len(paths) - 1, 1, 0)
    assert final_identifier.FailedSOPInstanceUIDList == lost.sop_instance_uid
    assert lost.sop_instance_uid not in received and len(received) == len(paths) - 1


def test_get_of_nothing_succeeds_with_zero_counts(portal, workstation, study):
    answers, received = _get(portal, _identifier("1.2.3.4.5.6.7.8.9"))
    [(final, _)] = answers
    assert final.Status == Status.SUCCESS
    assert final.NumberOfCompletedSuboperations == 0
    assert received == []


def test_a_peer_without_permission_to_retrieve_gets_nothing(portal, study):
    Peer.objects.create(ae_title="MODALITY", host="127.0.0.1", may_store=True)
    study_uid, _ = study
    answers, received = _get(portal, _identifier(study_uid), aet="MODALITY")
    assert answers[-1][0].Status == Status.NOT_AUTHORISED
    assert received == []
    assert AuditEvent.objects.get(action=AuditAction.RETRIEVE).outcome == Outcome.DENIED


def test_a_retrieve_is_on_the_record_for_the_study(portal, workstation, study):
    study_uid, paths = study
    _get(portal, _identifier(study_uid))
    portal.wait_idle()
    entry = AuditEvent.objects.get(action=AuditAction.RETRIEVE)
    assert (entry.peer_ae, entry.outcome, entry.study_uid) == ("DEST", Outcome.ALLOWED,
                                                               study_uid)
    assert entry.detail["instances"] == len(paths)


def _open_files_under(folder: Path) -> list[str]:
    """The files of ``folder`` this process has open (the listener runs in it)."""
    opened = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(str(folder)):
            opened.append(target)
    return opened


def _get_interrupted(portal, study_uid: str, interrupt, folder: Path):
    """A C-GET of the study that calls ``interrupt(event)`` while the third object is with
    the requester. Returns its answers, the objects received, when it interrupted, how
    long after that the listener took to end the association, and the "unclosed file"
    warnings about ``folder`` (a blob left for the garbage collector to close)."""
    received: list[str] = []
    interrupted: list[float] = []
    ae = AE(ae_title="DEST")
    ae.dimse_timeout = 1  # this requester's own wait for answers once it has aborted
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)

    def on_store(event):
        received.append(str(event.request.AffectedSOPInstanceUID))
        Path(event.dataset_path).unlink(missing_ok=True)
        if len(received) == 3:
            interrupt(event)
            interrupted.append(time.monotonic())
        return Status.SUCCESS

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        assoc = ae.associate(portal.host, portal.port, ae_title=portal.ae_title,
                             ext_neg=[build_role(CTImageStorage, scp_role=True)],
                             evt_handlers=[(evt.EVT_C_STORE, on_store)])
        assert assoc.is_established
        try:
            answers = [status for status, _ in assoc.send_c_get(
                _identifier(study_uid), StudyRootQueryRetrieveInformationModelGet, msg_id=1)]
        finally:
            if assoc.is_established:
                assoc.release()
        portal.wait_idle(timeout=40)
        ended = time.monotonic() - interrupted[0]
        gc.collect()
    unclosed = [str(w.message) for w in caught if str(folder) in str(w.message)]
    return answers, received, ended, unclosed


def _cancel(event) -> None:
    context = event.assoc._get_valid_context(StudyRootQueryRetrieveInformationModelGet, "",
                                             "scu")
    event.assoc.send_c_cancel(1, context.context_id)


def test_a_get_cancelled_mid_transfer_stops_there_with_the_counts_and_no_blob_left_open(
    portal, workstation, study, dicom_storage
):
    """The requester cancels while the third object is with it: nothing more is sent (not
    the object already read ahead either), the final answer is Cancel with the counts of
    what was and was not sent, and every blob the retrieve opened is closed again."""
    study_uid, paths = study
    answers, received, _, unclosed = _get_interrupted(portal, study_uid, _cancel,
                                                      dicom_storage)
    final = answers[-1]
    assert final.Status == 0xFE00  # Cancel
    assert len(received) == 3
    assert (final.NumberOfCompletedSuboperations,
            final.NumberOfRemainingSuboperations) == (3, len(paths) - 3)
    assert _open_files_under(dicom_storage) == []
    assert unclosed == []


def test_a_get_the_requester_aborts_mid_transfer_ends_at_once_with_no_blob_left_open(
    portal, workstation, study, dicom_storage
):
    """Aborted while the third object is with it (the fourth already read ahead, on the
    patched pynetdicom): the listener stops sending there and then, not after its DIMSE
    timeout (30 s here), and closes every blob it opened."""
    study_uid, _ = study
    _, received, ended, unclosed = _get_interrupted(
        portal, study_uid, lambda event: event.assoc.abort(), dicom_storage)
    assert len(received) == 3
    assert ended < 10  # not the 30 s DIMSE timeout
    assert _open_files_under(dicom_storage) == []
    assert unclosed == []


def _move_interrupted(portal, study_uid: str, dest_port: int, interrupt):
    """A C-MOVE of the study to a destination (a pynetdicom Storage SCP as DEST) that calls
    ``interrupt(event)`` while the third object is with it. Returns the requester's
    answers, the objects the destination received and how long after the interruption
    the requester's last answer came."""
    received: list[str] = []
    interrupted: list[float] = []

    def on_store(event):
        received.append(str(event.request.AffectedSOPInstanceUID))
        if len(received) == 3:
            interrupt(event)
            interrupted.append(time.monotonic())
        return Status.SUCCESS

    dest = AE(ae_title="DEST")
    dest.add_supported_context(CTImageStorage)
    server = dest.start_server(("127.0.0.1", dest_port), block=False,
                               evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert server is not None
    try:
        answers = _move(portal, _identifier(study_uid), "DEST")
        ended = time.monotonic() - interrupted[0]
    finally:
        server.shutdown()
    return answers, received, ended


def test_a_move_whose_destination_aborts_mid_transfer_ends_at_once_and_the_next_one_works(
    portal, workstation, study, dest_port, dicom_storage, tmp_path
):
    """The destination aborts while the third object is with it: the
    listener sees it before the next object (its sub-association's reactor is not left
    waiting), answers the requester with a failure for what was not sent well before its
    DIMSE timeout (30 s here), closes every blob, and the next C-MOVE sends everything."""
    study_uid, paths = study
    answers, received, ended = _move_interrupted(portal, study_uid, dest_port,
                                                 lambda event: event.assoc.abort())
    final = answers[-1]
    assert len(received) == 3
    assert final.Status != Status.SUCCESS
    assert final.NumberOfCompletedSuboperations <= 3
    assert (final.NumberOfCompletedSuboperations + final.NumberOfFailedSuboperations
            + final.NumberOfWarningSuboperations
            + final.get("NumberOfRemainingSuboperations", 0)) == len(paths)
    assert ended < 10
    portal.wait_idle(timeout=40)
    assert _open_files_under(dicom_storage) == []

    with storescp(tmp_path / "dest", port=dest_port):
        statuses = _move(portal, _identifier(study_uid), "DEST")
    assert statuses[-1].Status == Status.SUCCESS
    assert len(list((tmp_path / "dest").iterdir())) == len(paths)
