"""DIMSE status codes the listener answers with, by name (PS3.4 B.2.3, C.4; PS3.7 C)."""

from __future__ import annotations

import enum


class Status(enum.IntEnum):
    SUCCESS = 0x0000
    PENDING = 0xFF00
    CANCEL = 0xFE00

    # PS3.7 C: general failures that apply to every DIMSE service.
    NOT_AUTHORISED = 0x0124  # "Refused: Not Authorised": the peer lacks this permission
    # "Duplicate SOP Instance": a different object with this SOP Instance UID is stored.
    DUPLICATE_SOP_INSTANCE = 0x0111
    PROCESSING_FAILURE = 0x0110
    INVALID_ATTRIBUTE_VALUE = 0x0106
    NO_SUCH_OBJECT_INSTANCE = 0x0112  # N-SET of an instance the SCP does not hold

    # PS3.4 B.2.3: Storage Service Class.
    STORE_OUT_OF_RESOURCES = 0xA700  # the archive could not store it now; try again later
    STORE_DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900  # the dataset is not the announced object
    STORE_CANNOT_UNDERSTAND = 0xC210  # Cxxx "Cannot understand": the dataset is unparsable

    # PS3.4 C.4.1 to C.4.3: Query/Retrieve.
    FIND_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    FIND_UNABLE_TO_PROCESS = 0xC001  # Cxxx "Unable to process"
    MOVE_OUT_OF_RESOURCES_MATCHES = 0xA701  # could not calculate the number of matches
    MOVE_DESTINATION_UNKNOWN = 0xA801
    RETRIEVE_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    RETRIEVE_UNABLE_TO_PROCESS = 0xC002
