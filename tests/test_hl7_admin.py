"""A clinic admin reviews the HL7 messages her clinic's EHR sent in Django admin: the list
and each message's page show the text as received, and nothing can be changed, added or
deleted there. Another clinic's admin sees none of them; messages of unknown senders are
the platform superuser's."""

from __future__ import annotations

from html import unescape

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from accounts.models import Clinic, Role, User
from orders.handling import receive
from orders.models import Hl7Message, Hl7Peer
from tests.conftest import _user
from tests.hl7_support import orm

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:orders_hl7message_changelist")


def _orders_reviewer(user: User) -> User:
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="orders",
                                                         codename__startswith="view_"))
    return user


@pytest.fixture
def sara(clinic) -> User:
    user = _user("sara", Role.ADMIN, is_staff=True)
    user.clinics.add(clinic)
    return _orders_reviewer(user)


@pytest.fixture
def message(clinic) -> Hl7Message:
    Hl7Peer.objects.create(name="EHR Sul", host="127.0.0.1", sending_application="EHR",
                           sending_facility="SUL", clinic=clinic)
    answer = receive(orm("ADM-1", "SUL-1", "ACC1"), "127.0.0.1")
    assert answer.code == "AA"
    return Hl7Message.objects.get(pk=answer.message_pk)


@pytest.fixture
def stranger() -> Hl7Message:
    answer = receive(orm("ADM-2", "SUL-2", "ACC2", app="OTHER"), "127.0.0.1")
    assert answer.code == "AR"
    return Hl7Message.objects.get(pk=answer.message_pk)


def test_the_list_shows_each_message_as_received(client, sara, message):
    client.force_login(sara)
    response = client.get(CHANGELIST, HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 200
    html = unescape(response.content.decode())
    assert "ADM-1" in html and "ORM^O01" in html
    assert "PID|1||SUL-1^^^HOSP^MR||Souza^Maria^Clara||19800517|F" in html
    assert "Message as received" in html


def test_the_message_page_shows_the_whole_raw_text_read_only(client, sara, message):
    client.force_login(sara)
    page = reverse("admin:orders_hl7message_change", args=[message.pk])
    response = client.get(page, HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 200
    html = unescape(response.content.decode())
    for segment in message.raw.split("\r"):
        assert segment in html
    assert 'name="_save"' not in html and 'name="raw"' not in html
    assert client.post(page, {"raw": "MSH|changed", "outcome": "AE"}).status_code == 403
    message.refresh_from_db()
    assert message.raw.startswith("MSH|^~\\&|EHR|SUL|")
    delete = reverse("admin:orders_hl7message_delete", args=[message.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    assert client.get(reverse("admin:orders_hl7message_add")).status_code == 403
    assert Hl7Message.objects.filter(pk=message.pk).exists()


def test_another_clinics_admin_sees_none_of_them(client, message):
    norte = Clinic.objects.create(name="Clínica Norte")
    olga = _user("olga", Role.ADMIN, is_staff=True)
    olga.clinics.add(norte)
    client.force_login(_orders_reviewer(olga))
    html = client.get(CHANGELIST).content.decode()
    assert "ADM-1" not in html and "SUL-1" not in html and "EHR Sul" not in html
    page = reverse("admin:orders_hl7message_change", args=[message.pk])
    assert client.get(page).status_code in (302, 404)  # admin: "does not exist", to index
    assert "ADM-1" not in client.get(page, follow=True).content.decode()


def test_messages_of_unknown_senders_are_the_platform_superusers(client, sara, alice,
                                                                 message, stranger):
    client.force_login(sara)
    assert "ADM-2" not in client.get(CHANGELIST).content.decode()
    client.force_login(alice)
    html = client.get(CHANGELIST).content.decode()
    assert "ADM-1" in html and "ADM-2" in html


def test_the_page_is_in_portuguese_by_default(client, sara, message):
    client.force_login(sara)
    html = client.get(CHANGELIST).content.decode()
    assert "mensagem como recebida" in html.lower()
