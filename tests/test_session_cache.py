"""Sessions come from the shared cache when there is one, and a session ended anywhere is
ended everywhere: signing out, or the account's password changing, stops the cookie at once
although the session was cached."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.sessions.backends.cached_db import SessionStore
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

REPO = Path(__file__).resolve().parent.parent


def engine(**variables: str) -> str:
    code = "import portal.settings as s; print(s.SESSION_ENGINE)"
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", **variables}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60, check=True)
    return result.stdout.strip()


def test_with_redis_sessions_are_cached_and_written_through_to_the_database():
    assert engine(REDIS_URL="redis://127.0.0.1:6379/14") == (
        "django.contrib.sessions.backends.cached_db")
    assert engine(CACHE_URL="redis://127.0.0.1:6379/14") == (
        "django.contrib.sessions.backends.cached_db")


def test_without_a_shared_cache_every_request_reads_the_session_from_the_database():
    # A per-process cache would keep a signed-out session alive in the other workers.
    assert engine() == "django.contrib.sessions.backends.db"


@pytest.fixture
def cached_sessions(settings):
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"


def test_a_cached_session_costs_no_session_query(client, alice, cached_sessions):
    client.force_login(alice)
    assert client.get("/dicomweb/studies").status_code == 200
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/dicomweb/studies").status_code == 200
    assert not [q for q in queries if "django_session" in q["sql"]]


def test_signing_out_ends_a_cached_session_at_once(client, alice, cached_sessions):
    client.force_login(alice)
    key = client.session.session_key
    assert client.get("/dicomweb/studies").status_code == 200
    assert client.post("/accounts/logout/").status_code in (200, 302)
    assert cache.get(SessionStore.cache_key_prefix + key) is None
    client.cookies["sessionid"] = key  # the old cookie, replayed
    assert client.get("/dicomweb/studies").status_code == 401


def test_a_password_change_elsewhere_ends_a_cached_session(client, alice, cached_sessions):
    client.force_login(alice)
    assert client.get("/dicomweb/studies").status_code == 200
    alice.set_password("a-completely-new-password-123")
    alice.save()
    assert client.get("/dicomweb/studies").status_code == 401
