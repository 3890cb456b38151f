"""The listener's changes to pynetdicom's internals, installed only by whoever starts one.

Four modules replace pynetdicom internals for speed: :mod:`dimse.dul_wakeup` (idle sleeps
in the DUL and association loops become waits for work), :mod:`dimse.pdu_fast_codec`
(the fixed-form C-STORE command sets and File Meta read and written directly),
:mod:`dimse.stored_send` (C-GET and C-MOVE send a stored dataset's bytes as they are) and
:mod:`dimse.direct_send` (an association's thread writes to its socket itself when the DUL
thread has nothing to send).
All were measured against pynetdicom 3.0.4 and rely on its call sites (the names it looks
up, its loop delay, its queue attributes, the methods it calls):
tests/test_dimse_pynetdicom_call_sites.py fails when those change. So:

* nothing is patched on import: the listener command, :func:`dimse.server.start` and the
  test helper call :func:`apply`;
* :func:`install` refuses any pynetdicom but :data:`PINNED_VERSION`;
* ``DICOM_PYNETDICOM_PATCHES=0`` runs the listener on pynetdicom as it is (slower, but the
  same answers): the way out if a patch misbehaves, and how the tests run both ways.
"""

from __future__ import annotations

import threading

import pynetdicom
from pynetdicom import _config

from . import direct_send, dul_wakeup, pdu_fast_codec, stored_send

PINNED_VERSION = "3.0.4"  # as pinned in pyproject.toml

_lock = threading.Lock()
_installed = False


class UnsupportedPynetdicom(RuntimeError):
    """The installed pynetdicom is not the one the patches were written against."""


def check_version(installed: str | None = None) -> None:
    installed = pynetdicom.__version__ if installed is None else installed
    if installed != PINNED_VERSION:
        raise UnsupportedPynetdicom(
            f"pynetdicom {installed} is installed, but the DICOM listener's patches are "
            f"written for pynetdicom {PINNED_VERSION} only (dimse/dul_wakeup.py, "
            f"dimse/pdu_fast_codec.py, dimse/stored_send.py, dimse/direct_send.py). Install "
            f"pynetdicom=={PINNED_VERSION}, or run the listener without the patches: "
            f"DICOM_PYNETDICOM_PATCHES=0."
        )


def configure() -> None:
    """pynetdicom's documented switches the listener needs, patches or not.

    C-STORE bodies are streamed to a temporary Part 10 file (``event.dataset_path``)
    instead of being decoded in memory; pynetdicom's own debug logging of every PDU and
    DIMSE message, and of every query's identifiers (decoded and printed line by line even
    when its log level is off), is off: associations and operations are on the audit trail
    and in the listener's log.
    """
    _config.STORE_RECV_CHUNKED_DATASET = True
    _config.LOG_HANDLER_LEVEL = "none"
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False


def install() -> None:
    """Patch pynetdicom for the listener's speed. Idempotent."""
    global _installed
    check_version()
    with _lock:
        if not _installed:
            dul_wakeup.install()
            pdu_fast_codec.install()
            stored_send.install()
            direct_send.install()
            _installed = True


def uninstall() -> None:
    """Give pynetdicom its own code back. Idempotent."""
    global _installed
    with _lock:
        if _installed:
            direct_send.uninstall()
            stored_send.uninstall()
            pdu_fast_codec.uninstall()
            dul_wakeup.uninstall()
            _installed = False


def installed() -> bool:
    return _installed


def apply(enabled: bool) -> None:
    """Configure pynetdicom for the listener, patched or as it is."""
    configure()
    if enabled:
        install()
    else:
        uninstall()
