"""The listener's pynetdicom patches hold only for the pynetdicom they were written against:
these fail as soon as an upgrade moves a call site they rely on (dimse/pynetdicom_patches.py).
"""

from __future__ import annotations

import inspect
import io
import queue
import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from pydicom.uid import UID
from pynetdicom import (
    association,
    dimse_messages,
    dimse_primitives,
    dsutils,
    dul,
    fsm,
    pdu_items,
    pdu_primitives,
    presentation,
    utils,
)
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import (
    C_GET_RSP,
    C_MOVE_RSP,
    C_STORE_RQ,
    C_STORE_RSP,
    DIMSEMessage,
)
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.transport import AssociationSocket

from dimse import direct_send, dul_wakeup, pdu_fast_codec, pynetdicom_patches, stored_send


def _parameters(function: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(function).parameters)


def _global(module: Any, name: str) -> Any:
    """A module-level name as pynetdicom's own code looks it up."""
    return vars(module)[name]


def _source(function: Callable[..., Any]) -> str:
    return inspect.getsource(function)


def test_the_installed_pynetdicom_is_the_pinned_one():
    import pynetdicom

    assert pynetdicom.__version__ == pynetdicom_patches.PINNED_VERSION


def test_patching_another_pynetdicom_is_refused_naming_both_versions():
    with pytest.raises(pynetdicom_patches.UnsupportedPynetdicom) as refused:
        pynetdicom_patches.check_version("3.1.0")
    assert "3.1.0" in str(refused.value)
    assert pynetdicom_patches.PINNED_VERSION in str(refused.value)


def test_importing_the_listener_patches_nothing():
    """The patches are installed by whoever starts a listener, never as a side effect."""
    import importlib

    import dimse.server

    pynetdicom_patches.uninstall()
    importlib.reload(dimse.server)
    assert dul.time.sleep is __import__("time").sleep  # type: ignore[attr-defined]
    assert all("__init__" not in vars(rsp) for rsp in (C_STORE_RSP, C_GET_RSP, C_MOVE_RSP))
    assert AssociationSocket.recv is vars(AssociationSocket)["recv"]
    assert AssociationSocket.recv is not pdu_fast_codec._recv
    assert not pynetdicom_patches.installed()


def test_uninstalling_gives_pynetdicom_back_exactly_what_it_had():
    before = {
        "dul.time": dul.time,  # type: ignore[attr-defined]
        "association.time": association.time,  # type: ignore[attr-defined]
        "DUL": dict(vars(DULServiceProvider)),
        "RSP": [dict(vars(response)) for response in (C_STORE_RSP, C_GET_RSP, C_MOVE_RSP)],
        "RQ": dict(vars(C_STORE_RQ)),
        "socket": dict(vars(AssociationSocket)),
        "messages": [_global(dimse_messages, name) for name in (
            "decode", "create_file_meta", "write_file_meta_info")],
        "set_uid": [_global(module, "set_uid") for module in pdu_fast_codec.UID_CHECKERS],
        "presentation": [_global(presentation, name) for name in ("UID", "validate_uid")],
        "Association": dict(vars(association.Association)),
        "DT-1": fsm.ACTIONS["DT-1"],
    }
    pynetdicom_patches.install()
    assert fsm.ACTIONS["DT-1"][1] is stored_send.dt_1
    assert association.Association.send_c_store is stored_send.send_c_store
    assert dul.time is not before["dul.time"]  # type: ignore[attr-defined]
    assert all(_global(module, "set_uid") is pdu_fast_codec.set_uid
               for module in pdu_fast_codec.UID_CHECKERS)
    pynetdicom_patches.uninstall()
    after = {
        "dul.time": dul.time,  # type: ignore[attr-defined]
        "association.time": association.time,  # type: ignore[attr-defined]
        "DUL": dict(vars(DULServiceProvider)),
        "RSP": [dict(vars(response)) for response in (C_STORE_RSP, C_GET_RSP, C_MOVE_RSP)],
        "RQ": dict(vars(C_STORE_RQ)),
        "socket": dict(vars(AssociationSocket)),
        "messages": [_global(dimse_messages, name) for name in (
            "decode", "create_file_meta", "write_file_meta_info")],
        "set_uid": [_global(module, "set_uid") for module in pdu_fast_codec.UID_CHECKERS],
        "presentation": [_global(presentation, name) for name in ("UID", "validate_uid")],
        "Association": dict(vars(association.Association)),
        "DT-1": fsm.ACTIONS["DT-1"],
    }
    assert after == before


# --- dul_wakeup: the idle sleeps it replaces, and the queues and calls it wakes on -------

def test_both_reactor_loops_sleep_the_idle_delay_through_their_modules_time():
    assert "time.sleep(self._run_loop_delay)" in _source(DULServiceProvider.run_reactor)
    assert "time.sleep(0.001)" in _source(association.Association._run_reactor)
    assert dul_wakeup.IDLE_POLL == 0.001
    assert inspect.ismodule(dul.time) and inspect.ismodule(association.time)  # type: ignore[attr-defined]


def test_a_dul_idles_for_the_delay_the_wake_up_replaces():
    provider = DULServiceProvider(SimpleNamespace())  # type: ignore[arg-type]
    assert provider._run_loop_delay == dul_wakeup.IDLE_POLL
    assert isinstance(provider.to_provider_queue, queue.Queue)
    assert hasattr(provider, "socket")
    assert isinstance(provider, threading.Thread)


def test_the_dul_runs_its_reactor_through_the_method_the_wake_up_wraps():
    assert "make_target(self.run_reactor)" in _source(DULServiceProvider.__init__)
    assert "self.to_provider_queue" in _source(DULServiceProvider.__init__)


def test_the_dul_methods_the_wake_up_wraps_have_the_expected_signatures():
    assert _parameters(DULServiceProvider.__init__) == ["self", "assoc"]
    assert _parameters(DULServiceProvider.run_reactor) == ["self"]
    assert _parameters(DULServiceProvider.kill_dul) == ["self"]
    assert _parameters(DULServiceProvider.stop_dul) == ["self"]
    assert inspect.signature(DULServiceProvider.stop_dul).return_annotation in (bool, "bool")


def test_decoded_messages_wait_on_the_dimse_queue_the_wake_up_watches():
    assert "self.msg_queue" in _source(DIMSEServiceProvider.__init__)
    assert "self.msg_queue.get(" in _source(DIMSEServiceProvider.get_msg)
    messages: queue.Queue[object] = queue.Queue()
    assert hasattr(messages, "not_empty") and hasattr(messages, "_qsize")
    assert "self.dimse" in _source(association.Association.__init__)


# --- pdu_fast_codec: the names pynetdicom looks up, and the functions replaced ----------

def test_command_sets_are_decoded_through_the_module_global_decode():
    source = _source(DIMSEMessage.decode_msg)
    assert "decode(self.encoded_command_set, True, True)" in source
    assert _global(dimse_messages, "decode") is dsutils.decode
    assert _parameters(dsutils.decode) == _parameters(pdu_fast_codec.decode)


def test_the_file_meta_is_built_through_the_module_global_names_replaced():
    source = _source(DIMSEMessage.decode_msg)
    assert "write_file_meta_info(" in source
    assert "create_file_meta(" in source
    for keyword in ("sop_class_uid=", "sop_instance_uid=", "transfer_syntax="):
        assert keyword in source
    assert set(_parameters(dsutils.create_file_meta)) >= set(
        _parameters(pdu_fast_codec.file_meta))


def test_a_received_dataset_is_streamed_to_the_attributes_the_codec_copies():
    message = C_STORE_RQ()
    assert hasattr(message, "_data_set_path") and hasattr(message, "_data_set_file")
    source = _source(DIMSEMessage.message_to_primitive)
    for attribute in ("primitive._context_id", "primitive._dataset_path",
                      "primitive._dataset_file"):
        assert attribute in source


def test_the_message_methods_replaced_have_the_expected_signatures():
    assert _parameters(DIMSEMessage.__init__) == ["self"]
    assert _parameters(DIMSEMessage.primitive_to_message) == ["self", "primitive"]
    assert _parameters(DIMSEMessage.encode_msg) == ["self", "context_id", "max_pdu_length"]
    assert _parameters(DIMSEMessage.message_to_primitive) == ["self"]
    for response in (C_STORE_RSP, C_GET_RSP, C_MOVE_RSP):
        for name in ("__init__", "primitive_to_message", "encode_msg"):
            assert name not in vars(response) or not pynetdicom_patches.installed()
    assert "message_to_primitive" not in vars(C_STORE_RQ) or pynetdicom_patches.installed()


def test_pdus_are_read_through_the_socket_method_replaced():
    assert _parameters(AssociationSocket.recv) == ["self", "nr_bytes"]
    assert "self.socket" in _source(AssociationSocket.recv)


def test_uid_checks_are_looked_up_as_a_module_global_of_the_primitives():
    assert _global(dimse_primitives, "set_uid") is utils.set_uid
    assert "set_uid(value," in inspect.getsource(dimse_primitives)
    # ... and of the association PDUs' items and primitives and the presentation contexts
    for module in (pdu_items, pdu_primitives, presentation):
        assert _global(module, "set_uid") is utils.set_uid
        assert "= set_uid(" in inspect.getsource(module)
    assert _parameters(utils.set_uid) == _parameters(pdu_fast_codec.set_uid)


def test_a_context_makes_and_checks_its_transfer_syntaxes_through_module_globals():
    assert _global(presentation, "UID") is UID
    assert _global(presentation, "validate_uid") is utils.validate_uid
    source = _source(presentation.PresentationContext.add_transfer_syntax)
    assert "syntax = UID(syntax)" in source and "validate_uid(syntax)" in source
    assert "syntax.is_valid" in source and "syntax.is_transfer_syntax" in source
    assert _parameters(utils.validate_uid) == _parameters(pdu_fast_codec.validate_uid)


# --- stored_send: the C-STORE sub-operations it sends from the blob ---------------------

def test_send_c_store_keeps_the_parameters_the_stored_send_takes():
    original = stored_send._pynetdicom_send_c_store
    assert _parameters(original) == _parameters(stored_send.send_c_store)
    assert original is vars(association.Association)["send_c_store"] or \
        pynetdicom_patches.installed()


def test_send_c_store_pauses_sends_and_waits_as_the_stored_send_does():
    source = _source(stored_send._pynetdicom_send_c_store)
    for step in ("self._reactor_checkpoint.clear()", "while not self._is_paused:",
                 "self.dimse.send_msg(req, cast(int, context.context_id))",
                 "self.dimse.get_msg(block=True)", "self._reactor_checkpoint.set()",
                 "self._handle_no_response()", "self._check_received_status(rsp)",
                 "self._get_valid_context(", "allow_conversion=allow_conversion"):
        assert step in source, step
    assert _parameters(association.Association._get_valid_context)[:4] == [
        "self", "ab_syntax", "tr_syntax", "role"]


def test_the_reactor_looks_its_checkpoint_up_at_each_turn_and_serves_in_its_own_thread():
    """stored_send.pause_reactor swaps the reactor's event for a ReactorCheckpoint: the loop
    must read the attribute at each turn and pause itself between a turn's wait and poll;
    a C-GET's sub-operations run in the reactor thread (the Association thread itself)."""
    loop = _source(association.Association._run_reactor)
    assert loop.index("self._is_paused = True") < loop.index(
        "self._reactor_checkpoint.wait()") < loop.index("self.dimse.get_msg(block=False)")
    serve = _source(association.Association._serve_request)
    assert serve.index("self._is_paused = True") < serve.index("service_class.SCP(msg, context)")
    assert issubclass(association.Association, threading.Thread)
    assert "target=make_target(self.run_reactor)" in _source(association.Association.__init__)
    assert "self._run_reactor()" in _source(association.Association.run_reactor)
    kill = _source(association.Association.kill)
    assert "self._reactor_checkpoint.set()" in kill and "self._kill = True" in kill


def test_a_dataset_path_on_the_primitive_marks_the_message_and_is_sent_from_encode_msg():
    source = _source(DIMSEMessage.primitive_to_message)
    assert 'self._data_set_path = getattr(primitive, "_dataset_path", None)' in source
    assert "self.command_set.CommandDataSetType = 0x0001" in source
    encode = _source(DIMSEMessage.encode_msg)
    assert "if self.data_set is not None:" in encode
    assert "elif self._data_set_path is not None:" in encode
    assert "encode_msg" not in vars(C_STORE_RQ) or pynetdicom_patches.installed()


def test_dt_1_is_looked_up_at_each_event_and_sends_the_one_pdu_it_takes_off_the_queue():
    """stored_send.dt_1 replaces DT-1 in the action table: the state machine must look the
    action up at each event, DT-1 must take its primitive off the queue and send one
    P-DATA-TF, and any P_DATA (a BatchedPData is one) must be Evt9."""
    assert "action = ACTIONS[action_name]" in _source(fsm.StateMachine.do_action)
    assert "next_state = action[1](self.dul)" in _source(fsm.StateMachine.do_action)
    assert fsm.TRANSITION_TABLE[("Evt9", "Sta6")] == "DT-1"
    _, action, state = stored_send._PYNETDICOM_DT_1
    assert action is fsm.DT_1 and state == "Sta6"
    source = _source(fsm.DT_1)
    assert 'dul.to_provider_queue.get(False)' in source
    assert "dul._send(P_DATA_TF(primitive))" in source
    assert 'return "Sta6"' in source
    primitive_to_event = _source(DULServiceProvider._process_recv_primitive)
    assert "elif isinstance(primitive, P_DATA):" in primitive_to_event
    assert 'event = "Evt9"' in primitive_to_event
    assert "self.socket.send(pdu.encode())" in _source(DULServiceProvider._send)


def test_batched_pdus_decode_as_pynetdicom_reads_them_within_the_peers_limit():
    data = bytes(range(256)) * 300  # 76,800 bytes: several PDUs, a short last one
    for max_pdu in (16384, 4096, 0):
        wire = b"".join(b.wire for b in stored_send.batches(
            io.BytesIO(data), 5, max_pdu, batch_bytes=20000))
        received, controls, offset = b"", [], 0
        while offset < len(wire):
            length = int.from_bytes(wire[offset + 2:offset + 6], "big")
            assert max_pdu == 0 or length <= max_pdu
            pdu = P_DATA_TF()
            pdu.decode(wire[offset:offset + 6 + length])
            [item] = pdu.presentation_data_value_items
            context_id, value = item.presentation_context_id, item.presentation_data_value
            assert value is not None
            assert context_id == 5
            controls.append(value[0])
            received += value[1:]
            offset += 6 + length
        assert received == data
        assert controls[-1] == 0x02 and set(controls[:-1]) <= {0x00}


def test_the_get_and_move_scps_send_any_dataset_the_handler_yields_through_send_c_store():
    from pynetdicom.service_class import QueryRetrieveServiceClass

    get, move = (_source(QueryRetrieveServiceClass._get_scp),
                 _source(QueryRetrieveServiceClass._move_scp))
    assert "self.assoc.send_c_store(dataset, msg_id=msg_id)" in get
    assert "store_assoc.send_c_store(" in move
    for source in (get, move):
        assert "if not isinstance(dataset, Dataset):" in source


def test_the_listener_command_refuses_to_start_on_another_pynetdicom(
    monkeypatch: pytest.MonkeyPatch,
):
    import pynetdicom
    from django.core.management import CommandError, call_command

    monkeypatch.setattr(pynetdicom, "__version__", "3.1.0")
    with pytest.raises(CommandError, match=r"pynetdicom 3\.1\.0 is installed.*3\.0\.4"):
        call_command("dicom_listener", "--port", "0")
    assert not pynetdicom_patches.installed()


def test_the_listener_turns_off_pynetdicoms_logging_by_its_documented_switches():
    """Built even when nobody logs them: every PDU and message, every query's identifiers
    (decoded and pretty-printed line by line before the log level is looked at)."""
    from pynetdicom import _config, service_class

    pynetdicom_patches.configure()
    assert (_config.LOG_HANDLER_LEVEL, _config.LOG_REQUEST_IDENTIFIERS,
            _config.LOG_RESPONSE_IDENTIFIERS, _config.STORE_RECV_CHUNKED_DATASET) == (
        "none", False, False, True)
    source = inspect.getsource(service_class)
    assert "if _config.LOG_REQUEST_IDENTIFIERS:" in source
    assert "if _config.LOG_RESPONSE_IDENTIFIERS:" in source


def test_the_dul_reads_acts_and_queues_through_the_methods_direct_send_locks():
    """dimse.direct_send takes the send lock around the DUL's reads and actions: the loop
    must call them as methods, ``send_pdu`` must only queue, and a PDU read must leave its
    event and decoded PDU on the queues the state machine takes them from."""
    loop = _source(DULServiceProvider.run_reactor)
    assert "elif self._is_transport_event():" in loop
    assert "self.state_machine.do_action(event)" in loop
    assert "event = self.event_queue.get(block=False)" in loop
    assert "self._idle_timer.restart()" in loop
    assert "self.to_provider_queue.put(primitive)" in _source(DULServiceProvider.send_pdu)
    assert "self._read_pdu_data()" in _source(DULServiceProvider._is_transport_event)
    read = _source(DULServiceProvider._read_pdu_data)
    assert "self.event_queue.put(event)" in read and "self._recv_pdu.put(pdu)" in read
    assert "pdu = dul._recv_pdu.get(False)" in _source(fsm.DT_2)
    assert fsm.TRANSITION_TABLE[("Evt10", "Sta6")] == "DT-2"
    assert 'self.event_queue.put("Evt17")' in _source(AssociationSocket.send)


def test_direct_send_gives_pynetdicoms_own_methods_back():
    originals = (fsm.StateMachine.do_action, DULServiceProvider._is_transport_event,
                 DULServiceProvider.send_pdu)
    assert not direct_send.installed()
    direct_send.install()
    try:
        assert direct_send.installed()
        assert DULServiceProvider.send_pdu is not originals[2]
    finally:
        direct_send.uninstall()
    assert (fsm.StateMachine.do_action, DULServiceProvider._is_transport_event,
            DULServiceProvider.send_pdu) == originals
