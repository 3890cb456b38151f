"""Known peers: configured in admin or by command; unknown AE titles or hosts are refused."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from audit.models import AuditAction, AuditEvent, Outcome
from dimse.models import Peer
from dimse.policies import decide_peer, may_receive
from dimse.testing import dcmtk

pytestmark = pytest.mark.django_db(transaction=True)


def echo(portal, aet: str, called: str = "PORTAL"):
    result = dcmtk("echoscu", "-v", "-aet", aet, "-aec", called, *portal.address(), timeout=30)
    portal.wait_idle()
    return result


def _peers(*args: str) -> str:
    out = StringIO()
    call_command("dicom_peers", *args, stdout=out)
    return out.getvalue()


def test_dicom_peers_adds_lists_updates_and_removes_a_peer(transactional_db):
    assert "added CT01" in _peers("add", "CT01", "10.0.0.21", "104", "--store")
    assert _peers("list").split("\n")[0].split("\t") == ["CT01", "10.0.0.21", "104", "store",
                                                       "all clinics"]
    assert "updated CT01" in _peers("add", "CT01", "10.0.0.22", "--store", "--query")
    peer = Peer.objects.get(ae_title="CT01")
    assert (peer.host, peer.port, peer.may_store, peer.may_query, peer.may_retrieve) == (
        "10.0.0.22", None, True, True, False)
    assert "removed CT01" in _peers("remove", "CT01")
    assert not Peer.objects.exists()


def test_dicom_peers_refuses_what_is_not_an_ae_title(transactional_db):
    with pytest.raises(CommandError, match="AE title"):
        _peers("add", "A\\B", "10.0.0.1")
    with pytest.raises(CommandError, match="AE title"):
        _peers("add", "SEVENTEEN_CHARS_XX", "10.0.0.1")
    with pytest.raises(CommandError, match="no peer"):
        _peers("remove", "NOBODY")


def test_an_unknown_calling_ae_title_is_rejected_as_not_recognised(portal):
    result = echo(portal, "STRANGER")
    assert result.returncode != 0
    assert "Calling AE Title Not Recognized" in result.stderr
    entry = AuditEvent.objects.get(action=AuditAction.ASSOCIATION)
    assert (entry.peer_ae, entry.outcome) == ("STRANGER", Outcome.DENIED)


def test_a_known_ae_title_calling_from_another_host_is_rejected(portal):
    Peer.objects.create(ae_title="CT01", host="10.9.9.9", may_store=True)
    result = echo(portal, "CT01")
    assert "Calling AE Title Not Recognized" in result.stderr


def test_a_peer_configured_by_host_name_is_recognised(portal):
    Peer.objects.create(ae_title="CT01", host="localhost", may_store=True)
    assert echo(portal, "CT01").returncode == 0


def test_a_disabled_peer_is_rejected(portal):
    Peer.objects.create(ae_title="CT01", host="127.0.0.1", may_store=True, enabled=False)
    assert "Calling AE Title Not Recognized" in echo(portal, "CT01").stderr


def test_a_call_to_another_ae_title_is_rejected(portal):
    Peer.objects.create(ae_title="CT01", host="127.0.0.1", may_store=True)
    assert "Called AE Title Not Recognized" in echo(portal, "CT01", called="OTHER").stderr


def test_unknown_peers_are_accepted_when_a_first_installation_allows_them(portal, settings):
    settings.DICOM_ALLOW_UNKNOWN_PEERS = True
    assert echo(portal, "ANYONE").returncode == 0


def test_a_peer_may_only_what_it_is_allowed():
    modality = Peer(ae_title="CT01", host="10.0.0.21", may_store=True)
    assert decide_peer(modality, AuditAction.ASSOCIATION)
    assert decide_peer(modality, AuditAction.STORE)
    assert not decide_peer(modality, AuditAction.SEARCH)
    assert not decide_peer(modality, AuditAction.RETRIEVE)
    assert not decide_peer(modality, AuditAction.DELETE)
    # Allowing unknown peers does not widen what a configured one may do.
    assert not decide_peer(modality, AuditAction.RETRIEVE, allow_unknown=True)
    assert not decide_peer(None, AuditAction.ASSOCIATION)
    assert decide_peer(None, AuditAction.RETRIEVE, allow_unknown=True)
    assert not may_receive(modality)
    assert may_receive(Peer(ae_title="WS", host="10.0.0.40", port=11112))


def test_dicom_peers_binds_a_peer_to_a_clinic(transactional_db):
    from accounts.models import Clinic

    clinic = Clinic.objects.create(name="Clínica Sul")
    assert "added US02" in _peers("add", "US02", "10.0.0.52", "--store", "--clinic",
                                  "Clínica Sul")
    assert Peer.objects.get(ae_title="US02").clinic == clinic
    assert _peers("list").strip().endswith("Clínica Sul")
    with pytest.raises(CommandError, match="no clinic named"):
        _peers("add", "US03", "10.0.0.53", "--clinic", "Clínica Nenhuma")


def test_a_peer_bound_to_a_clinic_finds_and_retrieves_only_that_clinics_patients(
        portal, ct_study, other_study, tmp_path):
    from accounts.models import Clinic
    from imaging.models import Patient

    from .conftest import ingest_paths
    from .test_dimse_find import findscu

    ingest_paths(ct_study[1])
    ingest_paths(other_study[1])
    sul = Clinic.objects.create(name="Clínica Sul")
    norte = Clinic.objects.create(name="Clínica Norte")
    Patient.objects.filter(patient_id="PAULA-001").update(clinic=sul)
    Patient.objects.filter(patient_id="CHARLIE-002").update(clinic=norte)
    Peer.objects.create(ae_title="WORKSTATION", host="127.0.0.1", may_query=True,
                        may_retrieve=True, clinic=norte)
    result, answers = findscu(portal, tmp_path, "QueryRetrieveLevel=STUDY", "PatientID",
                              "StudyInstanceUID")
    assert result.returncode == 0, result.stderr
    assert [a.PatientID for a in answers] == ["CHARLIE-002"]
    got = tmp_path / "got"
    got.mkdir()
    refused = dcmtk("getscu", "-aet", "WORKSTATION", "-aec", portal.ae_title, "-S",
                    "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={ct_study[0]}",
                    "-od", str(got), *portal.address(), timeout=60)
    portal.wait_idle()
    assert not list(got.iterdir()), refused.stdout  # paula's study is not the peer's
    workstation = Peer.objects.get(ae_title="WORKSTATION")
    workstation.clinic = None  # archive-wide, saved as admin saves it (in force at once)
    workstation.save()
    _result, answers = findscu(portal, tmp_path, "QueryRetrieveLevel=STUDY", "PatientID")
    assert sorted(a.PatientID for a in answers) == ["CHARLIE-002", "PAULA-001"]
