"""The listener's direct encodings of the C-STORE response and of the File Meta
Information are byte for byte what pynetdicom and pydicom would write."""

from __future__ import annotations

import io

import pytest
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID
from pynetdicom.dimse_messages import C_STORE_RSP, DIMSEMessage
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import create_file_meta

from dimse import fastpath

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


def _pynetdicoms(primitive: C_STORE, max_pdu: int = 16382) -> list[tuple[int, bytes]]:
    message = C_STORE_RSP.__new__(C_STORE_RSP)
    DIMSEMessage.__init__(message)
    DIMSEMessage.primitive_to_message(message, primitive)
    return [item for pdata in DIMSEMessage.encode_msg(message, 1, max_pdu)
            for item in pdata.presentation_data_value_list]


def _fast(primitive: C_STORE, max_pdu: int = 16382) -> list[tuple[int, bytes]]:
    message = C_STORE_RSP.__new__(C_STORE_RSP)
    fastpath._init(message)
    fastpath._primitive_to_message(message, primitive)
    return [item for pdata in fastpath._encode_msg(message, 1, max_pdu)
            for item in pdata.presentation_data_value_list]


@pytest.mark.parametrize("status", [0x0000, 0xB000, 0xA700, 0xC000, 0x0111, 0x0124])
def test_store_responses_are_encoded_as_pynetdicom_encodes_them(status: int):
    assert fastpath.store_response_command(_response(status)) is not None
    assert _fast(_response(status)) == _pynetdicoms(_response(status))


def test_a_response_without_uids_is_encoded_as_pynetdicom_encodes_it():
    assert _fast(_response(0, uids=False)) == _pynetdicoms(_response(0, uids=False))


def test_a_response_with_an_error_comment_is_left_to_pynetdicom():
    primitive = _response(0xC000, comment="cannot understand")
    assert fastpath.store_response_command(primitive) is None
    assert _fast(primitive) == _pynetdicoms(primitive)


def test_a_response_larger_than_the_peers_pdu_is_fragmented_by_pynetdicom():
    assert _fast(_response(0), max_pdu=64) == _pynetdicoms(_response(0), max_pdu=64)


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.4.50",
                                    "1.2.840.10008.1.2.1.99"])
def test_the_file_meta_is_written_as_pydicom_writes_it(syntax: str):
    expected, written = io.BytesIO(), io.BytesIO()
    write_file_meta_info(expected, create_file_meta(  # type: ignore[arg-type]
        sop_class_uid=UID(CT), sop_instance_uid=UID(ODD_UID), transfer_syntax=UID(syntax)))
    fastpath.write_file_meta(written, fastpath.file_meta(
        sop_class_uid=CT, sop_instance_uid=ODD_UID, transfer_syntax=syntax))
    assert written.getvalue() == expected.getvalue()
