"""The fixed-form command sets of every received C-STORE, read and written directly, of
every C-GET and C-MOVE response without a data set, and of the C-STORE responses to a
retrieve's sub-operations.

For each object a modality sends, pynetdicom decodes the C-STORE request's command set, and
builds and encodes two small datasets, all through pydicom: the response's command set and
the File Meta Information it puts in front of the received dataset. All three have a fixed
form (PS3.7 9.3.1 and E.1; PS3.10 7.1), and handling them element by element through
pydicom cost about 2 ms of each object's 8 ms in the listener. A retrieve sends a pending
C-GET or C-MOVE response after each object, of the same fixed form (PS3.7 9.3.3, 9.3.4):
through pydicom, half of a sub-operation's own time; reading the peer's C-STORE response
to it through pydicom took another 0.2 ms. :func:`install` (called by
:mod:`dimse.pynetdicom_patches`, never on import) has
pynetdicom use the direct codecs below instead (and read PDUs from the socket in one
buffer). They give what pydicom gives (the same
bytes, the same request primitive: tests/test_dimse_pdu_fast_codec.py compares them), and
anything outside the fixed form (another command, an unexpected element, a response with
an error comment) still goes through pydicom.
"""

from __future__ import annotations

import functools
import socket
import struct
from collections.abc import Iterator
from typing import IO, Any, cast

from pydicom.uid import UID
from pynetdicom import (
    PYNETDICOM_IMPLEMENTATION_UID,
    PYNETDICOM_IMPLEMENTATION_VERSION,
    _config,
    dimse_messages,
    dimse_primitives,
    dsutils,
    pdu_items,
    pdu_primitives,
    presentation,
    utils,
)
from pynetdicom.dimse_messages import C_GET_RSP, C_MOVE_RSP, C_STORE_RQ, C_STORE_RSP, DIMSEMessage
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import AssociationSocket

from .patching import originals, restore

_C_STORE_RSP_COMMAND = 0x8001
_NO_DATASET = 0x0101


def padded(value: str, pad: bytes = b"\x00") -> bytes:
    """A text value's bytes, padded to an even length (with NUL for a UID, PS3.5 9.1)."""
    raw = value.encode("ascii")
    return raw + pad if len(raw) % 2 else raw


def implicit_element(tag: int, value: bytes) -> bytes:
    """One Implicit VR Little Endian element."""
    return struct.pack("<HHL", tag >> 16, tag & 0xFFFF, len(value)) + value


# The responses written directly, by message class: their Command Field (PS3.7 E.1).
RESPONSE_COMMANDS = {C_STORE_RSP: 0x8001, C_GET_RSP: 0x8010, C_MOVE_RSP: 0x8021}
# A C-GET or C-MOVE response's sub-operation counts (PS3.7 9.3.3.2, 9.3.4.2), by tag.
_SUBOPERATION_COUNTS = ((0x00001020, "NumberOfRemainingSuboperations"),
                        (0x00001021, "NumberOfCompletedSuboperations"),
                        (0x00001022, "NumberOfFailedSuboperations"),
                        (0x00001023, "NumberOfWarningSuboperations"))


def response_command(primitive: Any, command_field: int = _C_STORE_RSP_COMMAND,
                     ) -> bytes | None:
    """The command set of a C-STORE, C-GET or C-MOVE response without a data set (Implicit
    VR Little Endian), or None when the response carries more than the fixed fields (an
    error comment, an offending element, an identifier)."""
    if any(getattr(primitive, name, None) is not None
           for name in ("OffendingElement", "ErrorComment", "ErrorID", "Identifier")):
        return None
    message_id = primitive.MessageIDBeingRespondedTo
    status = primitive.Status
    if message_id is None or status is None:
        return None
    body = b""
    if primitive.AffectedSOPClassUID:
        body += implicit_element(0x00000002, padded(str(primitive.AffectedSOPClassUID)))
    body += implicit_element(0x00000100, struct.pack("<H", command_field))
    body += implicit_element(0x00000120, struct.pack("<H", message_id))
    body += implicit_element(0x00000800, struct.pack("<H", _NO_DATASET))
    body += implicit_element(0x00000900, struct.pack("<H", status))
    if getattr(primitive, "AffectedSOPInstanceUID", None):
        body += implicit_element(0x00001000, padded(str(primitive.AffectedSOPInstanceUID)))
    for tag, keyword in _SUBOPERATION_COUNTS:
        count = getattr(primitive, keyword, None)
        if count is not None:
            body += implicit_element(tag, struct.pack("<H", count))
    return implicit_element(0x00000000, struct.pack("<L", len(body))) + body


def _init(self: DIMSEMessage) -> None:
    # pynetdicom builds a command set template here; it is built only when needed.
    self.context_id = None
    self._encoded = None  # type: ignore[attr-defined]


def _pynetdicoms_message(self: DIMSEMessage, primitive: Any) -> None:
    DIMSEMessage.__init__(self)
    DIMSEMessage.primitive_to_message(self, primitive)
    self._encoded = None  # type: ignore[attr-defined]


def _primitive_to_message(self: DIMSEMessage, primitive: Any) -> None:
    self._encoded = response_command(  # type: ignore[attr-defined]
        primitive, RESPONSE_COMMANDS[type(self)])
    self._primitive = primitive  # type: ignore[attr-defined]
    if self._encoded is None:  # type: ignore[attr-defined]
        _pynetdicoms_message(self, primitive)


def _encode_msg(self: DIMSEMessage, context_id: int, max_pdu_length: int) -> Iterator[P_DATA]:
    encoded: bytes | None = getattr(self, "_encoded", None)
    if encoded is not None and max_pdu_length and len(encoded) + 7 > max_pdu_length:
        # A peer taking PDUs too small for one fragment: pynetdicom's way, in full.
        _pynetdicoms_message(self, self._primitive)  # type: ignore[attr-defined]
        encoded = None
    if encoded is None:
        yield from DIMSEMessage.encode_msg(self, context_id, max_pdu_length)
        return
    self.context_id = context_id
    pdata = P_DATA()
    # Message control header 0x03: command information, the last fragment.
    pdata.presentation_data_value_list.append((context_id, b"\x03" + encoded))
    yield pdata


def file_meta(*, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str,
              implementation_uid: str = PYNETDICOM_IMPLEMENTATION_UID,
              implementation_version: str = PYNETDICOM_IMPLEMENTATION_VERSION,
              ) -> dict[str, str]:
    """Stands in for ``pynetdicom.dsutils.create_file_meta``: the values only."""
    return {"sop_class": sop_class_uid, "sop_instance": sop_instance_uid,
            "transfer_syntax": transfer_syntax, "implementation": implementation_uid,
            "version": implementation_version}


def _explicit(tag: int, vr: bytes, value: bytes) -> bytes:
    group, element = tag >> 16, tag & 0xFFFF
    if vr == b"OB":
        return struct.pack("<HH", group, element) + vr + b"\x00\x00" + struct.pack(
            "<L", len(value)) + value
    return struct.pack("<HH", group, element) + vr + struct.pack("<H", len(value)) + value


def write_file_meta(fp: IO[bytes], meta: dict[str, str], enforce_standard: bool = True,
                    ) -> None:
    """Stands in for ``pydicom.filewriter.write_file_meta_info`` on :func:`file_meta`'s
    values: the File Meta Information group, Explicit VR Little Endian."""
    version = meta["version"].encode("ascii")
    if len(version) % 2:
        version += b" "
    body = (
        _explicit(0x00020001, b"OB", b"\x00\x01")
        + _explicit(0x00020002, b"UI", padded(meta["sop_class"]))
        + _explicit(0x00020003, b"UI", padded(meta["sop_instance"]))
        + _explicit(0x00020010, b"UI", padded(meta["transfer_syntax"]))
        + _explicit(0x00020012, b"UI", padded(meta["implementation"]))
        + _explicit(0x00020013, b"SH", version)
    )
    fp.write(_explicit(0x00020000, b"UL", struct.pack("<L", len(body))) + body)


# The command elements of the fixed forms below (PS3.7 E.1), by tag: keyword and VR.
_COMMAND_ELEMENTS = {
    0x00000000: ("CommandGroupLength", "UL"),
    0x00000002: ("AffectedSOPClassUID", "UI"),
    0x00000100: ("CommandField", "US"),
    0x00000110: ("MessageID", "US"),
    0x00000120: ("MessageIDBeingRespondedTo", "US"),
    0x00000700: ("Priority", "US"),
    0x00000800: ("CommandDataSetType", "US"),
    0x00000900: ("Status", "US"),
    0x00001000: ("AffectedSOPInstanceUID", "UI"),
    0x00001030: ("MoveOriginatorApplicationEntityTitle", "AE"),
    0x00001031: ("MoveOriginatorMessageID", "US"),
}


def _form(*tags: int) -> dict[int, tuple[str, str]]:
    return {tag: _COMMAND_ELEMENTS[tag] for tag in tags}


# The elements a C-STORE-RQ command set may hold (PS3.7 9.3.1.1), and those of a C-STORE-RSP
# without an error comment or offending element (9.3.1.2).
_STORE_REQUEST = _form(0x00000000, 0x00000002, 0x00000100, 0x00000110, 0x00000700,
                       0x00000800, 0x00001000, 0x00001030, 0x00001031)
_STORE_REQUEST_KEYWORDS = frozenset(keyword for keyword, _ in _STORE_REQUEST.values())
_STORE_RESPONSE = _form(0x00000000, 0x00000002, 0x00000100, 0x00000120, 0x00000800,
                        0x00000900, 0x00001000)
_STORE_RESPONSE_KEYWORDS = frozenset(keyword for keyword, _ in _STORE_RESPONSE.values())
C_STORE_RQ_COMMAND = 0x0001  # its Command Field (PS3.7 E.1)
_pynetdicom_decode = dsutils.decode
_pynetdicom_message_to_primitive = C_STORE_RQ.message_to_primitive


class FixedCommand:
    """A fixed-form command set as pynetdicom reads it: its elements as attributes, None for
    the others of its form."""

    keywords: frozenset[str] = frozenset()
    #: Those of its elements the C-STORE primitive takes.
    primitive_keywords: tuple[str, ...] = ()

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:
        if name in type(self).keywords:
            return None
        raise AttributeError(name)

    def __contains__(self, keyword: str) -> bool:
        """As ``keyword in dataset``: pynetdicom's debug handlers ask it."""
        return keyword in self.__dict__


class StoreRequestCommand(FixedCommand):
    """A C-STORE-RQ command set (PS3.7 9.3.1.1)."""

    keywords = _STORE_REQUEST_KEYWORDS
    primitive_keywords = ("MessageID", "AffectedSOPClassUID", "AffectedSOPInstanceUID",
                          "Priority", "MoveOriginatorApplicationEntityTitle",
                          "MoveOriginatorMessageID")


class StoreResponseCommand(FixedCommand):
    """A C-STORE-RSP command set without an error comment or offending element (9.3.1.2)."""

    keywords = _STORE_RESPONSE_KEYWORDS
    primitive_keywords = ("MessageIDBeingRespondedTo", "AffectedSOPClassUID",
                          "AffectedSOPInstanceUID", "Status")


def _fixed_values(raw: bytes, known: dict[int, tuple[str, str]]) -> dict[str, Any] | None:
    """The elements of an Implicit VR Little Endian command set, by keyword, if every one
    is in ``known`` and single-valued; else None (pydicom reads it)."""
    values: dict[str, Any] = {}
    offset, end = 0, len(raw)
    while offset < end:
        if offset + 8 > end:
            return None
        group, element, length = struct.unpack_from("<HHL", raw, offset)
        offset += 8
        form = known.get(group << 16 | element)
        if form is None or offset + length > end:
            return None
        keyword, vr = form
        value = raw[offset:offset + length]
        offset += length
        if vr == "US":
            if length != 2:
                return None
            values[keyword] = struct.unpack("<H", value)[0]
        elif vr == "UL":
            if length != 4:
                return None
            values[keyword] = struct.unpack("<L", value)[0]
        else:
            try:
                text = value.decode("ascii")
            except UnicodeDecodeError:
                return None
            if "\\" in text:
                return None  # several values: pydicom's conventions apply
            if vr == "AE":
                values[keyword] = text.strip(" \x00")
            elif vr == "UI":
                values[keyword] = UID(text.rstrip(" \x00"))
            else:
                values[keyword] = text.rstrip(" \x00")
    return values


def store_request_command(raw: bytes) -> StoreRequestCommand | None:
    """An Implicit VR Little Endian C-STORE-RQ command set, or None for anything else."""
    values = _fixed_values(raw, _STORE_REQUEST)
    if values is None or values.get("CommandField") != C_STORE_RQ_COMMAND:
        return None
    return StoreRequestCommand(values)


def store_response_command(raw: bytes) -> StoreResponseCommand | None:
    """An Implicit VR Little Endian C-STORE-RSP command set of the fixed form (no data set,
    no error comment, offending element or other optional field), or None."""
    values = _fixed_values(raw, _STORE_RESPONSE)
    if (values is None or values.get("CommandField") != _C_STORE_RSP_COMMAND
            or values.get("CommandDataSetType") != _NO_DATASET or "Status" not in values):
        return None
    return StoreResponseCommand(values)


def decode(bytestring: Any, is_implicit_vr: bool, is_little_endian: bool,
           deflated: bool = False) -> Any:
    """Stands in for ``pynetdicom.dsutils.decode`` where pynetdicom decodes command sets
    (the same parameters, by name too)."""
    if is_implicit_vr and is_little_endian and not deflated:
        raw = bytestring.getvalue()
        command: FixedCommand | None = store_request_command(raw) or store_response_command(raw)
        if command is not None:
            return command
    return _pynetdicom_decode(bytestring, is_implicit_vr, is_little_endian, deflated)


def _fixed_to_primitive(message: DIMSEMessage, command: FixedCommand) -> C_STORE:
    """The C-STORE primitive of a fixed-form command set, as pynetdicom's own
    ``message_to_primitive`` fills it."""
    primitive = C_STORE()
    # Through the primitive's own setters, which check the peer's values.
    for keyword in command.primitive_keywords:
        value = getattr(command, keyword)
        if value is not None:
            setattr(primitive, keyword, value)
    primitive._context_id = message.context_id
    primitive._dataset_path = message._data_set_path
    primitive._dataset_file = message._data_set_file
    return primitive


def _message_to_primitive(self: C_STORE_RQ) -> Any:
    command = self.command_set
    if not isinstance(command, StoreRequestCommand):
        return _pynetdicom_message_to_primitive(self)
    primitive = _fixed_to_primitive(self, command)
    primitive.DataSet = self.data_set
    return primitive


def _store_response_to_primitive(self: C_STORE_RSP) -> Any:
    """``message_to_primitive`` of a C-STORE-RSP; a fixed-form one read directly (pydicom
    took 0.2 ms of each C-GET or C-MOVE sub-operation to decode and convert it)."""
    command = self.command_set
    if not isinstance(command, StoreResponseCommand):
        return DIMSEMessage.message_to_primitive(self)
    return _fixed_to_primitive(self, command)


def _recv(self: AssociationSocket, nr_bytes: int) -> bytearray:
    """``AssociationSocket.recv``: the same bytes, read into one buffer as they come rather
    than 4 KiB per call (a 128 KiB PDU took 32 reads and appends, 0.1 ms)."""
    sock = cast(socket.socket, self.socket)
    buffer = bytearray(nr_bytes)
    received = 0
    with memoryview(buffer) as view:
        while received < nr_bytes:
            read = sock.recv_into(view[received:], nr_bytes - received)
            if not read:  # the connection was closed: what arrived, as pynetdicom returns it
                break
            received += read
    return buffer if received == nr_bytes else buffer[:received]


@functools.lru_cache(maxsize=4096)
def _cached_set_uid(value: Any, name: str, allow_empty: bool, allow_none: bool,
                    validate: bool) -> Any:
    return utils.set_uid(value, name, allow_empty, allow_none, validate)


def set_uid(value: Any, name: str, allow_empty: bool = True, allow_none: bool = True,
            validate: bool = True) -> Any:
    """``pynetdicom.utils.set_uid`` for the DIMSE primitives, the association PDUs' items
    and primitives and the presentation contexts, remembering recent answers.

    Each C-STORE checks the same two UIDs four times (the request's, then again as they are
    copied into the response) with two regular expressions each; the SOP Class UID is the
    same for a whole series. An association request from DCMTK's getscu or storescu proposes
    120-130 presentation contexts, each checked as an item, again as a primitive and as a
    context: 3 ms of the 6.4 its decoding took. The check is a pure function of its
    arguments and its answer an immutable UID, so a value seen before gets the same answer
    (an error is not remembered; a value that cannot be a key is checked as it is).
    """
    try:
        return _cached_set_uid(value, name, allow_empty, allow_none, validate)
    except TypeError:  # unhashable: pynetdicom's own check says what is wrong with it
        return utils.set_uid(value, name, allow_empty, allow_none, validate)


#: The modules whose ``set_uid`` global :func:`install` replaces.
UID_CHECKERS = (dimse_primitives, pdu_items, pdu_primitives, presentation)


class KnownUID(UID):
    """A UID whose checks are made once: a transfer syntax a presentation context is given
    (``PresentationContext.add_transfer_syntax``) is checked for its form twice, whether it
    is private and whether it is a transfer syntax, for every context of a request and again
    for every context of the answer: half of decoding getscu's 121 contexts and of
    negotiating them. The answers are pure functions of the (immutable) value."""

    @functools.cached_property
    def is_valid(self) -> bool:
        return UID.is_valid.fget(self)  # type: ignore[attr-defined,no-any-return]

    @functools.cached_property
    def is_private(self) -> bool:
        return UID.is_private.fget(self)  # type: ignore[attr-defined,no-any-return]

    @functools.cached_property
    def is_transfer_syntax(self) -> bool:
        return UID.is_transfer_syntax.fget(self)  # type: ignore[attr-defined,no-any-return]


@functools.lru_cache(maxsize=4096)
def known_uid(value: str) -> KnownUID:
    """``UID(value)`` for ``pynetdicom.presentation``: one :class:`KnownUID` per value."""
    return KnownUID(value)


@functools.lru_cache(maxsize=4096)
def _cached_validate_uid(uid: str, enforced: bool) -> bool:
    return bool(utils.validate_uid(UID(uid)))


def validate_uid(uid: UID) -> bool:
    """``pynetdicom.utils.validate_uid`` for the presentation contexts, remembered per value
    and per ``ENFORCE_UID_CONFORMANCE`` (what the answer depends on)."""
    return _cached_validate_uid(str(uid), bool(_config.ENFORCE_UID_CONFORMANCE))


def install() -> None:
    """Have pynetdicom use the direct encodings. Idempotent.

    The response class is changed in place rather than replaced by a subclass, because
    pynetdicom's own logging handlers look messages up by their exact class.
    """
    for response in RESPONSE_COMMANDS:
        setattr(response, "__init__", _init)  # noqa: B010
        setattr(response, "primitive_to_message", _primitive_to_message)  # noqa: B010
        setattr(response, "encode_msg", _encode_msg)  # noqa: B010
    setattr(AssociationSocket, "recv", _recv)  # noqa: B010
    setattr(dimse_messages, "decode", decode)  # noqa: B010
    setattr(C_STORE_RQ, "message_to_primitive", _message_to_primitive)  # noqa: B010
    setattr(C_STORE_RSP, "message_to_primitive", _store_response_to_primitive)  # noqa: B010
    setattr(dimse_messages, "create_file_meta", file_meta)  # noqa: B010
    setattr(dimse_messages, "write_file_meta_info", write_file_meta)  # noqa: B010
    for module in UID_CHECKERS:
        setattr(module, "set_uid", set_uid)  # noqa: B010
    setattr(presentation, "UID", known_uid)  # noqa: B010
    setattr(presentation, "validate_uid", validate_uid)  # noqa: B010


# What install() replaces, as found in each owner's own namespace.
_ORIGINALS = originals((
    *((response, name) for response in (C_STORE_RSP, C_GET_RSP, C_MOVE_RSP)
      for name in ("__init__", "primitive_to_message", "encode_msg")),
    (AssociationSocket, "recv"),
    (dimse_messages, "decode"),
    (C_STORE_RQ, "message_to_primitive"),
    (C_STORE_RSP, "message_to_primitive"),
    (dimse_messages, "create_file_meta"),
    (dimse_messages, "write_file_meta_info"),
    *((module, "set_uid") for module in UID_CHECKERS),
    (presentation, "UID"),
    (presentation, "validate_uid"),
))


def uninstall() -> None:
    """pynetdicom's own codecs again. Idempotent."""
    restore(_ORIGINALS)
