"""Typed readers for the environment variables ``portal/settings.py`` is built from.

Each reader fails loudly: a value it cannot read raises ``ImproperlyConfigured`` naming the
variable, instead of quietly falling back. A mistyped ``REQUIRE_2FA=ture`` must not turn
the second factor off, and a mistyped ``PRODUCTION`` must not keep the development key.
An empty variable counts as unset (orchestrators often pass ``VAR=`` for "not given").

Kept free of Django settings so it can be imported before they exist.
"""

from __future__ import annotations

import builtins
import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import environ
from django.core.exceptions import ImproperlyConfigured

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})

N = TypeVar("N", int, float)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Environment:
    """Reads one mapping (``os.environ`` in settings, a plain dict in tests)."""

    def __init__(self, variables: Mapping[builtins.str, builtins.str]) -> None:
        self.variables = variables

    def _raw(self, name: builtins.str) -> builtins.str | None:
        value = self.variables.get(name, "").strip()
        return value or None

    def _refuse(self, name: builtins.str, value: builtins.str, expected: builtins.str
                ) -> ImproperlyConfigured:
        return ImproperlyConfigured(f"{name}={value!r} is not {expected}")

    def str(self, name: builtins.str, default: builtins.str = "") -> builtins.str:
        return self._raw(name) or default

    def bool(self, name: builtins.str, default: builtins.bool) -> builtins.bool:
        """1/0, true/false, yes/no, on/off in any case; anything else is refused."""
        value = self._raw(name)
        if value is None:
            return default
        if value.lower() in TRUE:
            return True
        if value.lower() in FALSE:
            return False
        raise self._refuse(name, value, "a boolean (1/0, true/false, yes/no, on/off)")

    def int(self, name: builtins.str, default: builtins.int, *,
            minimum: builtins.int | None = None,
            maximum: builtins.int | None = None) -> builtins.int:
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = builtins.int(value)
        except ValueError:
            raise self._refuse(name, value, "a whole number") from None
        return self._bounded(name, number, minimum, maximum)

    def float(self, name: builtins.str, default: builtins.float, *,
              minimum: builtins.float | None = None,
              maximum: builtins.float | None = None) -> builtins.float:
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = builtins.float(value)
        except ValueError:
            raise self._refuse(name, value, "a number") from None
        if number != number or number in (builtins.float("inf"), builtins.float("-inf")):
            raise self._refuse(name, value, "a finite number")
        return self._bounded(name, number, minimum, maximum)

    def _bounded(
            self, name: builtins.str, number: N, minimum: N | None, maximum: N | None) -> N:
        if minimum is not None and number < minimum:
            raise ImproperlyConfigured(f"{name}={number} is below its minimum {minimum}")
        if maximum is not None and number > maximum:
            raise ImproperlyConfigured(f"{name}={number} is above its maximum {maximum}")
        return number

    def list(self, name: builtins.str, default: builtins.list[builtins.str] | None = None
             ) -> builtins.list[builtins.str]:
        """Comma-separated; blanks around items and empty items are dropped."""
        value = self._raw(name)
        if value is None:
            return builtins.list(default or [])
        return [item.strip() for item in value.split(",") if item.strip()]

    def choice(self, name: builtins.str, default: builtins.str,
               choices: builtins.list[builtins.str]) -> builtins.str:
        value = self._raw(name)
        if value is None:
            return default
        if value not in choices:
            raise self._refuse(name, value, f"one of {', '.join(choices)}")
        return value

    def path(self, name: builtins.str, default: Path) -> Path:
        value = self._raw(name)
        return Path(value) if value is not None else default

    def networks(self, name: builtins.str, default: builtins.list[builtins.str] | None = None
                 ) -> builtins.list[Network]:
        """Comma-separated addresses or CIDR networks (``10.0.0.0/8,::1``)."""
        found = []
        for item in self.list(name, default):
            try:
                found.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise self._refuse(name, item, "an IP address or CIDR network") from None
        return found

    def db_url(self, name: builtins.str, default: builtins.str) -> dict[builtins.str, Any]:
        """A database URL (``postgres://...``, ``sqlite:///...``) as Django's DATABASES entry."""
        value = self._raw(name) or default
        scheme = value.split("://", 1)[0]
        if "://" not in value or scheme not in environ.Env.DB_SCHEMES:
            raise self._refuse(name, value, "a database URL (postgres://..., sqlite:///...)")
        config: dict[builtins.str, Any] = dict(environ.Env.db_url_config(value))
        return config
