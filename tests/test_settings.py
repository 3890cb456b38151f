"""Settings fail loudly: a value that cannot be read stops the start, naming the variable.

Production refuses debug mode, the built-in secret key and a missing broker that nobody
chose; every setting read anywhere is defined once in portal/settings.py and documented.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import global_settings
from django.core.exceptions import ImproperlyConfigured

import portal.settings
from portal.environment import Environment

REPO = Path(__file__).resolve().parent.parent
GOOD_KEY = "k" * 20 + "a-long-random-value-for-this-test-only-0123456789"
PRODUCTION = {"PRODUCTION": "1", "SECRET_KEY": GOOD_KEY, "ALLOWED_HOSTS": "portal.example.org",
              "TASKS_IN_PROCESS": "1"}


def start(code: str = "import portal.settings", **variables: str
          ) -> subprocess.CompletedProcess[str]:
    """Load portal/settings.py (or run ``code``) in a fresh interpreter with only these
    variables set."""
    environment = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"),
                   **variables}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO,
                          env=environment, capture_output=True, text=True, timeout=60)


def refused(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    return result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("spelling", ["1", "true", "TRUE", "Yes", "on", "ON"])
def test_a_boolean_is_true_in_every_usual_spelling(spelling):
    assert Environment({"FLAG": spelling}).bool("FLAG", default=False) is True


@pytest.mark.parametrize("spelling", ["0", "false", "False", "NO", "off"])
def test_a_boolean_is_false_in_every_usual_spelling(spelling):
    assert Environment({"FLAG": spelling}).bool("FLAG", default=True) is False


def test_an_unset_or_empty_variable_takes_its_default():
    assert Environment({}).bool("FLAG", default=True) is True
    assert Environment({"FLAG": "  "}).bool("FLAG", default=True) is True
    assert Environment({"N": ""}).int("N", default=7) == 7


def test_a_mistyped_boolean_is_refused_naming_the_variable():
    with pytest.raises(ImproperlyConfigured, match="REQUIRE_2FA='ture' is not a boolean"):
        Environment({"REQUIRE_2FA": "ture"}).bool("REQUIRE_2FA", default=True)


def test_a_number_outside_its_bounds_or_not_a_number_is_refused():
    with pytest.raises(ImproperlyConfigured, match="DICOM_PORT=70000 is above"):
        Environment({"DICOM_PORT": "70000"}).int("DICOM_PORT", 11112, maximum=65535)
    with pytest.raises(ImproperlyConfigured, match="AXES_FAILURE_LIMIT=0 is below"):
        Environment({"AXES_FAILURE_LIMIT": "0"}).int("AXES_FAILURE_LIMIT", 5, minimum=1)
    with pytest.raises(ImproperlyConfigured, match="'five' is not a whole number"):
        Environment({"AXES_FAILURE_LIMIT": "five"}).int("AXES_FAILURE_LIMIT", 5)
    with pytest.raises(ImproperlyConfigured, match="'nan' is not a finite number"):
        Environment({"AXES_COOLOFF_HOURS": "nan"}).float("AXES_COOLOFF_HOURS", 1.0)


def test_a_proxy_that_is_not_an_address_is_refused():
    with pytest.raises(ImproperlyConfigured, match=r"TRUSTED_PROXIES='proxy\.local'"):
        Environment({"TRUSTED_PROXIES": "10.0.0.0/8, proxy.local"}).networks("TRUSTED_PROXIES")


def test_a_mistyped_require_2fa_stops_the_portal_instead_of_turning_the_second_factor_off():
    assert "REQUIRE_2FA='ture'" in refused(start(REQUIRE_2FA="ture"))


def test_a_mistyped_production_stops_the_portal_instead_of_keeping_the_built_in_key():
    assert "PRODUCTION='ys'" in refused(start(PRODUCTION="ys"))


def test_production_refuses_debug_mode():
    assert "DEBUG" in refused(start(**PRODUCTION, DEBUG="1"))


def test_production_refuses_the_built_in_key_or_a_short_one():
    without_key = {k: v for k, v in PRODUCTION.items() if k != "SECRET_KEY"}
    assert "SECRET_KEY" in refused(start(**without_key))
    assert "SECRET_KEY" in refused(start(**without_key,
                                         SECRET_KEY=portal.settings.DEVELOPMENT_SECRET_KEY))
    assert "SECRET_KEY" in refused(start(**without_key, SECRET_KEY="short-secret"))


def test_production_without_a_broker_needs_tasks_in_process_said_explicitly():
    chosen = start(**PRODUCTION)
    assert chosen.returncode == 0, chosen.stderr
    not_chosen = {k: v for k, v in PRODUCTION.items() if k != "TASKS_IN_PROCESS"}
    assert "TASKS_IN_PROCESS=1" in refused(start(**not_chosen))
    assert start(**not_chosen, REDIS_URL="redis://127.0.0.1:6379/0").returncode == 0


def test_tasks_in_process_and_a_broker_together_are_refused():
    assert "choose one" in refused(start(TASKS_IN_PROCESS="1",
                                         CELERY_BROKER_URL="redis://127.0.0.1:6379/0"))


def _python_files() -> list[Path]:
    skip = {".venv", ".cache", "tests", "node_modules", "data"}
    return [p for p in REPO.rglob("*.py") if not skip & set(p.relative_to(REPO).parts)]


# Read with getattr by the DICOM listener's branch, which defines them under these names
# (DICOM_BIND, DICOM_NETWORK_TIMEOUT) in its own change to portal/settings.py (issue #11).
def test_every_setting_the_code_reads_with_getattr_is_defined_in_the_settings_module():
    read = set()
    for path in _python_files():
        read |= set(re.findall(r"getattr\(\s*settings\s*,\s*[\"']([A-Z0-9_]+)[\"']",
                               path.read_text(encoding="utf-8")))
    assert read, "the scan found nothing: the pattern is wrong"
    defined = set(vars(portal.settings)) | set(vars(global_settings))
    assert read - defined == set()


def _settings_variables() -> set[str]:
    source = (REPO / "portal" / "settings.py").read_text(encoding="utf-8")
    return set(re.findall(r"\benv\.\w+\(\s*\"([A-Z0-9_]+)\"", source))


def test_every_environment_variable_the_settings_read_is_in_the_readme_table():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| ([^|]+)\|", table, re.MULTILINE))
    names = set(re.findall(r"`([A-Z0-9_]+)`", " ".join(documented)))
    variables = _settings_variables()
    assert len(variables) > 40
    assert variables - names == set()


def test_the_settings_read_every_variable_through_a_typed_reader():
    source = (REPO / "portal" / "settings.py").read_text(encoding="utf-8")
    assert "os.environ[" not in source and "os.getenv" not in source
    assert "environ.Env(" not in source
