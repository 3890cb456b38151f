"""Users on the audit trail are deactivated, not deleted: deleting one would rewrite (or
orphan) chained entries."""

from __future__ import annotations

import pytest
from django.db import transaction

from accounts.models import User
from audit.actors import UserOnTrail
from audit.models import AuditAction, AuditEvent
from audit.trail import Actor, Target, first_broken_link, record


def _on_trail(user: User) -> None:
    record(AuditAction.VIEW, Actor.for_user(user), Target("study", "1.2.3"))


def test_deleting_a_user_on_the_trail_through_the_orm_is_refused(dora):
    _on_trail(dora)
    with pytest.raises(UserOnTrail), transaction.atomic():
        dora.delete()
    with pytest.raises(UserOnTrail), transaction.atomic():
        User.objects.filter(pk=dora.pk).delete()
    assert User.objects.filter(pk=dora.pk).exists()
    assert AuditEvent.objects.get().user_pk == dora.pk
    assert first_broken_link() is None


def test_a_user_never_on_the_trail_can_be_deleted(tina):
    tina.delete()
    assert not User.objects.filter(username="tina").exists()


def test_deleting_a_user_on_the_trail_in_admin_deactivates_it_with_a_message(client, alice,
                                                                          dora):
    _on_trail(dora)
    client.force_login(alice)
    response = client.post(f"/admin/accounts/user/{dora.pk}/delete/", {"post": "yes"},
                           follow=True, HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 200
    dora.refresh_from_db()
    assert dora.is_active is False
    assert "deactivated, not deleted" in response.content.decode()
    entry = AuditEvent.objects.get(user_pk=dora.pk)
    assert (entry.username, entry.user_pk) == ("dora", dora.pk)
    assert first_broken_link() is None


def test_the_admin_bulk_delete_deactivates_users_on_the_trail_and_deletes_the_others(
        client, alice, dora, tina):
    _on_trail(dora)
    client.force_login(alice)
    response = client.post("/admin/accounts/user/", {
        "action": "delete_selected", "_selected_action": [dora.pk, tina.pk], "post": "yes",
    }, follow=True, HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 200
    assert "deactivated, not deleted" in response.content.decode()
    assert User.objects.get(pk=dora.pk).is_active is False
    assert not User.objects.filter(pk=tina.pk).exists()
    assert first_broken_link() is None
