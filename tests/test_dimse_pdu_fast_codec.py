"""The listener's direct codecs for C-STORE: the request's command set is read as pydicom
reads it, the response's command set and the File Meta Information are byte for byte what
pynetdicom and pydicom would write."""

from __future__ import annotations

import io
from typing import Any

import pytest
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID
from pynetdicom import utils
from pynetdicom.dimse_messages import C_GET_RSP, C_MOVE_RSP, C_STORE_RQ, C_STORE_RSP, DIMSEMessage
from pynetdicom.dimse_primitives import C_GET, C_MOVE, C_STORE
from pynetdicom.dsutils import create_file_meta, decode, encode

from dimse import pdu_fast_codec

CT = "1.2.840.10008.5.1.4.1.1.2"
ODD_UID = "1.2.826.0.1.3680043.10.1455.51735589504883388086373433265729948"  # odd length


def _response(status: int, *, comment: str | None = None, uids: bool = True) -> C_STORE:
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = 7
    if uids:
        primitive.AffectedSOPClassUID = CT
        primitive.AffectedSOPInstanceUID = ODD_UID
    primitive.Status = status
    if comment:
        primitive.ErrorComment = comment  # type: ignore[assignment]
    return primitive


def _encoded(primitive: Any, max_pdu: int = 16382, *, fast: bool = True,
             message_class: type[DIMSEMessage] = C_STORE_RSP) -> list[tuple[int, bytes]]:
    """The PDVs of a response, encoded the listener's way or pynetdicom's own."""
    message = message_class.__new__(message_class)
    if fast:
        pdu_fast_codec._init(message)
        pdu_fast_codec._primitive_to_message(message, primitive)
        pdatas = pdu_fast_codec._encode_msg(message, 1, max_pdu)
    else:
        DIMSEMessage.__init__(message)
        DIMSEMessage.primitive_to_message(message, primitive)
        pdatas = DIMSEMessage.encode_msg(message, 1, max_pdu)
    return [item for pdata in pdatas for item in pdata.presentation_data_value_list]


def _fast(primitive: C_STORE, max_pdu: int = 16382) -> list[tuple[int, bytes]]:
    return _encoded(primitive, max_pdu)


def _pynetdicoms(primitive: C_STORE, max_pdu: int = 16382) -> list[tuple[int, bytes]]:
    return _encoded(primitive, max_pdu, fast=False)


@pytest.mark.parametrize("status", [0x0000, 0xB000, 0xA700, 0xC000, 0x0111, 0x0124])
def test_store_responses_are_encoded_as_pynetdicom_encodes_them(status: int):
    assert pdu_fast_codec.response_command(_response(status)) is not None
    assert _fast(_response(status)) == _pynetdicoms(_response(status))


def test_a_response_without_uids_is_encoded_as_pynetdicom_encodes_it():
    assert _fast(_response(0, uids=False)) == _pynetdicoms(_response(0, uids=False))


def test_a_response_with_an_error_comment_is_left_to_pynetdicom():
    primitive = _response(0xC000, comment="cannot understand")
    assert pdu_fast_codec.response_command(primitive) is None
    assert _fast(primitive) == _pynetdicoms(primitive)


def test_a_response_larger_than_the_peers_pdu_is_fragmented_by_pynetdicom():
    assert _fast(_response(0), max_pdu=64) == _pynetdicoms(_response(0), max_pdu=64)


def _retrieve_response(primitive_class: type, status: int, *, counts: bool = True,
                       identifier: bool = False, uids: bool = True) -> Any:
    primitive = primitive_class()
    primitive.MessageIDBeingRespondedTo = 3
    if uids:
        primitive.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.3"  # Study Root GET
    primitive.Status = status
    if counts:
        primitive.NumberOfRemainingSuboperations = 197
        primitive.NumberOfCompletedSuboperations = 2
        primitive.NumberOfFailedSuboperations = 1
        primitive.NumberOfWarningSuboperations = 0
    if identifier:
        primitive.Identifier = io.BytesIO(encode(_failed_list(), True, True) or b"")
    return primitive


def _failed_list() -> Any:
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.FailedSOPInstanceUIDList = [ODD_UID]
    return ds


RETRIEVES = [(C_GET, C_GET_RSP), (C_MOVE, C_MOVE_RSP)]


@pytest.mark.parametrize(("primitive_class", "message_class"), RETRIEVES, ids=["get", "move"])
@pytest.mark.parametrize(("status", "counts", "uids"), [
    (0xFF00, True, True), (0x0000, True, True), (0x0000, False, True), (0xB000, True, False),
    (0xA701, False, False)])
def test_retrieve_responses_are_encoded_as_pynetdicom_encodes_them(
        primitive_class, message_class, status, counts, uids):
    def primitive() -> Any:
        return _retrieve_response(primitive_class, status, counts=counts, uids=uids)
    assert pdu_fast_codec.response_command(primitive()) is not None
    assert _encoded(primitive(), message_class=message_class) == _encoded(
        primitive(), message_class=message_class, fast=False)


@pytest.mark.parametrize(("primitive_class", "message_class"), RETRIEVES, ids=["get", "move"])
def test_a_retrieve_response_with_its_failed_list_is_left_to_pynetdicom(
        primitive_class, message_class):
    def primitive() -> Any:
        return _retrieve_response(primitive_class, 0xB000, identifier=True)
    assert pdu_fast_codec.response_command(primitive()) is None
    fast = _encoded(primitive(), message_class=message_class)
    assert fast == _encoded(primitive(), message_class=message_class, fast=False)
    assert len(fast) == 2  # the command, then the identifier


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.4.50",
                                    "1.2.840.10008.1.2.1.99"])
def test_the_file_meta_is_written_as_pydicom_writes_it(syntax: str):
    expected, written = io.BytesIO(), io.BytesIO()
    write_file_meta_info(expected, create_file_meta(  # type: ignore[arg-type]
        sop_class_uid=UID(CT), sop_instance_uid=UID(ODD_UID), transfer_syntax=UID(syntax)))
    pdu_fast_codec.write_file_meta(written, pdu_fast_codec.file_meta(
        sop_class_uid=CT, sop_instance_uid=ODD_UID, transfer_syntax=syntax))
    assert written.getvalue() == expected.getvalue()


def _store_request(**fields: object) -> bytes:
    """A C-STORE-RQ command set as a peer would send it (pynetdicom's own encoding)."""
    primitive = C_STORE()
    primitive.MessageID = 11
    primitive.AffectedSOPClassUID = CT
    primitive.AffectedSOPInstanceUID = ODD_UID
    primitive.Priority = 2
    for name, value in fields.items():
        setattr(primitive, name, value)
    primitive.DataSet = io.BytesIO(b"\x08\x00")
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    return encode(message.command_set, True, True)  # type: ignore[return-value]


def _request_both_ways(raw: bytes) -> tuple[dict[str, object], dict[str, object]]:
    def decoded(command: object) -> dict[str, object]:
        message = C_STORE_RQ()
        message.command_set = command  # type: ignore[assignment]
        message.context_id = 3
        primitive = pdu_fast_codec._message_to_primitive(message)
        return {name: getattr(primitive, name) for name in (
            "MessageID", "AffectedSOPClassUID", "AffectedSOPInstanceUID", "Priority",
            "MoveOriginatorApplicationEntityTitle", "MoveOriginatorMessageID")}

    fast = pdu_fast_codec.store_request_command(raw)
    assert fast is not None
    return decoded(fast), decoded(decode(io.BytesIO(raw), True, True))


@pytest.mark.parametrize("fields", [
    {},
    {"MoveOriginatorApplicationEntityTitle": "MOVESCU", "MoveOriginatorMessageID": 5},
    {"Priority": 0, "AffectedSOPInstanceUID": "1.2.3"},
])
def test_store_requests_are_read_as_pydicom_reads_them(fields: dict[str, object]):
    fast, pydicoms = _request_both_ways(_store_request(**fields))
    assert fast == pydicoms


def test_other_commands_and_unexpected_elements_are_left_to_pydicom():
    raw = _store_request()
    find = raw.replace(b"\x00\x00\x00\x01\x02\x00\x00\x00\x01\x00",
                       b"\x00\x00\x00\x01\x02\x00\x00\x00\x20\x00")
    assert find != raw and pdu_fast_codec.store_request_command(find) is None
    assert pdu_fast_codec.store_request_command(raw + b"\x00\x00\x02\x09\x02\x00\x00\x00AB") is None
    assert pdu_fast_codec.store_request_command(raw[:-3]) is None  # cut inside a value


def _response_command(primitive: C_STORE) -> bytes:
    """A C-STORE-RSP command set as a peer would send it (pynetdicom's own encoding)."""
    message = C_STORE_RSP()
    message.primitive_to_message(primitive)
    return encode(message.command_set, True, True)  # type: ignore[return-value]


def _received_response(command: object) -> dict[str, object]:
    """What the C-STORE SCU gets of a response whose command set reads as ``command``."""
    message = C_STORE_RSP.__new__(C_STORE_RSP)
    DIMSEMessage.__init__(message)
    message.command_set = command  # type: ignore[assignment]
    message.context_id = 3
    primitive = pdu_fast_codec._store_response_to_primitive(message)
    assert type(primitive) is C_STORE
    return {name: getattr(primitive, name) for name in (
        "MessageIDBeingRespondedTo", "AffectedSOPClassUID", "AffectedSOPInstanceUID",
        "Status", "ErrorComment", "OffendingElement", "MessageID", "DataSet")} | {
        "context": primitive._context_id}


@pytest.mark.parametrize(("status", "uids"), [(0x0000, True), (0xB000, True),
                                              (0xA700, True), (0x0000, False)])
def test_store_responses_are_read_as_pydicom_reads_them(status: int, uids: bool):
    raw = _response_command(_response(status, uids=uids))
    fast = pdu_fast_codec.store_response_command(raw)
    assert isinstance(fast, pdu_fast_codec.StoreResponseCommand)
    assert pdu_fast_codec.decode(io.BytesIO(raw), True, True) is not None
    assert _received_response(fast) == _received_response(decode(io.BytesIO(raw), True, True))


@pytest.mark.parametrize("uids", [True, False])
def test_pynetdicoms_debug_log_reads_a_fixed_form_response_as_it_reads_pydicoms(uids: bool):
    """With pynetdicom's debug handlers on (LOG_HANDLER_LEVEL "standard"), a response read
    directly is logged line for line as one pydicom read."""
    from types import SimpleNamespace

    from pynetdicom._handlers import _recv_c_store_rsp

    raw = _response_command(_response(0x0000, uids=uids))

    def logged(command: object) -> list[str]:
        message = SimpleNamespace(command_set=command, context_id=3)
        return _recv_c_store_rsp(SimpleNamespace(message=message))  # type: ignore[arg-type]

    fast = pdu_fast_codec.store_response_command(raw)
    assert logged(fast) == logged(decode(io.BytesIO(raw), True, True))
    assert any("Affected SOP Class UID" in line for line in logged(fast)) is uids


def test_a_response_with_an_error_comment_or_of_another_command_is_left_to_pydicom():
    commented = _response_command(_response(0xC000, comment="disk full"))
    assert pdu_fast_codec.store_response_command(commented) is None
    assert pdu_fast_codec.store_response_command(_store_request()) is None
    plain = _response_command(_response(0x0000))
    assert pdu_fast_codec.store_response_command(plain[:-3]) is None  # cut inside a value
    # pydicom's reading of a commented response, comment and all, still reaches the SCU
    got = _received_response(pdu_fast_codec.decode(io.BytesIO(commented), True, True))
    assert got["ErrorComment"] == "disk full" and got["Status"] == 0xC000


def test_pdus_are_read_whole_across_many_small_sends_and_short_at_a_close():
    import socket
    import threading

    from pynetdicom.transport import AssociationSocket

    ours, theirs = socket.socketpair()
    reader = AssociationSocket.__new__(AssociationSocket)
    reader.socket = ours
    payload = bytes(range(256)) * 1024

    def send_in_pieces() -> None:
        for start in range(0, len(payload), 1000):
            theirs.sendall(payload[start:start + 1000])
        theirs.sendall(b"tail")
        theirs.close()

    sender = threading.Thread(target=send_in_pieces)
    sender.start()
    assert pdu_fast_codec._recv(reader, len(payload)) == payload
    assert pdu_fast_codec._recv(reader, 100) == b"tail"  # closed after four bytes
    sender.join()
    ours.close()


@pytest.mark.parametrize("value", [CT, ODD_UID, UID(CT), b"1.2.3\x00", "", None])
def test_remembered_uid_checks_answer_as_pynetdicom_does(value: object):
    for _ in range(2):  # the first answer computed, the second remembered
        assert pdu_fast_codec.set_uid(value, "Affected SOP Class UID") == utils.set_uid(
            value, "Affected SOP Class UID")  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["1.2.3" * 20, "9" * 65, 12])
def test_remembered_uid_checks_refuse_what_pynetdicom_refuses(value: object):
    for _ in range(2):  # an error is raised every time, never remembered as an answer
        with pytest.raises((ValueError, TypeError)):
            pdu_fast_codec.set_uid(value, "Affected SOP Instance UID")
    with pytest.raises((ValueError, TypeError)):
        utils.set_uid(value, "Affected SOP Instance UID")  # type: ignore[arg-type]


@pytest.mark.usefixtures("patched_pynetdicom")
def test_a_request_with_an_invalid_uid_is_still_refused_after_a_valid_one():
    valid = C_STORE()
    valid.AffectedSOPInstanceUID = ODD_UID
    assert valid.AffectedSOPInstanceUID == ODD_UID
    with pytest.raises(ValueError):
        C_STORE().AffectedSOPInstanceUID = ODD_UID + "1" * 10  # longer than 64


def _many_context_request() -> bytes:
    """An A-ASSOCIATE-RQ as DCMTK's getscu sends one: every storage SOP class in three
    transfer syntaxes, each with an SCP/SCU role selection, encoded by pynetdicom itself."""
    from pynetdicom import StoragePresentationContexts, build_role
    from pynetdicom.pdu import A_ASSOCIATE_RQ
    from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
    from pynetdicom.presentation import build_context

    request = A_ASSOCIATE()
    request.application_context_name = "1.2.840.10008.3.1.1.1"
    request.calling_ae_title = "GETSCU"
    request.called_ae_title = "PORTAL"
    contexts = [build_context(str(cx.abstract_syntax), ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2",
                                                   "1.2.840.10008.1.2.4.70"])
                for cx in StoragePresentationContexts]
    for number, cx in enumerate(contexts):
        cx.context_id = 2 * number + 1
    request.presentation_context_definition_list = contexts
    length = MaximumLengthNotification()
    length.maximum_length_received = 16384
    request.user_information = [length, *(build_role(str(cx.abstract_syntax), scp_role=True)
                                          for cx in contexts)]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(request)
    return bytes(pdu.encode())


def _decoded(raw: bytes) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    from pynetdicom.pdu import A_ASSOCIATE_RQ

    pdu = A_ASSOCIATE_RQ()
    pdu.decode(raw)
    primitive = pdu.to_primitive()
    contexts = [(cx.context_id, cx.abstract_syntax, tuple(cx.transfer_syntax))
                for cx in primitive.presentation_context_definition_list]
    roles = [(type(item).__name__, getattr(item, "sop_class_uid", None),
              getattr(item, "scu_role", None), getattr(item, "scp_role", None))
             for item in primitive.user_information]
    return contexts, roles


def _as_pynetdicom_gives_it(compute: Any) -> Any:
    """``compute()`` with pynetdicom as it is, asserted equal with the patches installed
    (twice: the UID checks computed, then remembered); returns pynetdicom's answer."""
    from dimse import pynetdicom_patches

    pynetdicom_patches.uninstall()
    as_is = compute()
    pynetdicom_patches.install()
    try:
        for _ in range(2):
            assert compute() == as_is
    finally:
        pynetdicom_patches.uninstall()
    return as_is


def test_an_association_request_of_many_contexts_decodes_as_pynetdicom_decodes_it():
    raw = _many_context_request()
    as_is = _as_pynetdicom_gives_it(lambda: _decoded(raw))
    assert len(as_is[0]) > 100 and all(len(ts) == 3 for _, _, ts in as_is[0])
    assert sum(name == "SCP_SCU_RoleSelectionNegotiation" for name, *_ in as_is[1]) > 100


@pytest.mark.usefixtures("patched_pynetdicom")
def test_an_unhashable_value_is_checked_as_pynetdicom_checks_it():
    with pytest.raises((ValueError, TypeError)):
        pdu_fast_codec.set_uid(["1.2.3"], "Abstract Syntax Name")
    from pynetdicom.presentation import PresentationContext

    context = PresentationContext()
    with pytest.raises(ValueError):
        context.abstract_syntax = "1.2." + "3" * 70  # too long, however often it is tried
    context.abstract_syntax = CT
    assert context.abstract_syntax == CT


def _negotiated(raw: bytes) -> list[tuple[Any, ...]]:
    """The listener's answer to a request: each context's result, syntax and roles."""
    from pynetdicom.pdu import A_ASSOCIATE_RQ
    from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation
    from pynetdicom.presentation import negotiate_as_acceptor

    from dimse.server import supported_contexts

    pdu = A_ASSOCIATE_RQ()
    pdu.decode(raw)
    primitive = pdu.to_primitive()
    roles = {item.sop_class_uid: (item.scu_role, item.scp_role)
             for item in primitive.user_information
             if isinstance(item, SCP_SCU_RoleSelectionNegotiation)}
    contexts, _ = negotiate_as_acceptor(primitive.presentation_context_definition_list,
                                        supported_contexts(), roles)  # type: ignore[arg-type]
    return [(cx.context_id, cx.result, cx.abstract_syntax, tuple(cx.transfer_syntax),
             cx.as_scu, cx.as_scp) for cx in contexts]


def test_an_association_request_of_many_contexts_is_answered_as_pynetdicom_answers_it():
    raw = _many_context_request()
    as_is = _as_pynetdicom_gives_it(lambda: _negotiated(raw))
    assert sum(result == 0 for _, result, *_ in as_is) > 100


@pytest.mark.parametrize("value", [
    "1.2.840.10008.1.2.1",  # a transfer syntax
    "1.2.840.10008.5.1.4.1.1.2",  # a SOP class, not a transfer syntax
    "1.2.826.0.1.3680043.8.498.1",  # private
    "1.2.840.10008.1.2.01",  # a component with a leading zero: not conformant
    "",
])
def test_a_remembered_transfer_syntax_answers_every_check_as_a_uid_does(value):
    from pydicom.uid import UID

    known, plain = pdu_fast_codec.known_uid(value), UID(value)
    assert known == plain and pdu_fast_codec.known_uid(value) is known

    def answer(uid: UID, check: str) -> Any:
        try:
            return getattr(uid, check)
        except ValueError as exc:  # is_compressed of what is not a transfer syntax
            return str(exc)

    for check in ("is_valid", "is_private", "is_transfer_syntax", "is_compressed", "name"):
        assert answer(known, check) == answer(plain, check), check
    assert pdu_fast_codec.validate_uid(plain) == utils.validate_uid(plain)


@pytest.mark.usefixtures("patched_pynetdicom")
def test_a_context_still_refuses_an_invalid_transfer_syntax_and_warns_of_odd_ones(caplog):
    from pynetdicom.presentation import PresentationContext

    context = PresentationContext()
    for _ in range(2):
        with pytest.raises(ValueError):
            context.add_transfer_syntax("1.2." + "3" * 70)
    context.add_transfer_syntax("1.2.840.10008.5.1.4.1.1.2")
    context.add_transfer_syntax("1.2.840.10008.5.1.4.1.1.2")
    assert context.transfer_syntax == ["1.2.840.10008.5.1.4.1.1.2"]  # once
    assert "not a transfer syntax" in caplog.text
