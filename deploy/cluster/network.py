"""The cluster's private network: one namespace per host, joined by veth pairs to a bridge.

The bridge lives in its own namespace (the "switch"), so the machine's own network never
sees the cluster's traffic and no cluster host can reach the machine's PostgreSQL, Redis
or anything else outside the /24. Every namespace the harness makes is named with
:data:`PREFIX`, which is how a stale one (a run killed before it could tidy up) is found.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

PREFIX = "pcl-"
SUBNET = "10.231.0"
SWITCH = f"{PREFIX}switch"
BRIDGE = "br0"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def in_host(name: str, argv: Sequence[str]) -> list[str]:
    """``argv`` run inside host ``name``'s namespace."""
    return ["ip", "netns", "exec", PREFIX + name, *argv]


def namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, text=True,
                         timeout=10).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def remove_all() -> None:
    """Kill what still runs in a namespace of ours, then delete the namespaces (deleting
    one deletes its veth ends too)."""
    for name in namespaces():
        if name.startswith(PREFIX):
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True,
                                  text=True, check=False, timeout=10).stdout.split()
            for pid in pids:
                subprocess.run(["kill", "-KILL", pid], check=False, capture_output=True)
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True,
                           timeout=10)


def netns_permitted() -> str | None:
    """``None`` if namespaces can be made here, else why not."""
    probe = f"{PREFIX}probe"
    try:
        _ip("netns", "add", probe)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"ip netns is not permitted here ({exc})"
    _ip("netns", "del", probe)
    return None


def create(hosts: dict[str, int]) -> None:
    """The switch, then one namespace per host with ``eth0`` at ``SUBNET.<n>/24``."""
    _ip("netns", "add", SWITCH)
    sw = ["-n", SWITCH]
    _ip(*sw, "link", "set", "lo", "up")
    _ip(*sw, "link", "add", BRIDGE, "type", "bridge")
    _ip(*sw, "link", "set", BRIDGE, "up")
    for index, (name, octet) in enumerate(hosts.items()):
        ns = PREFIX + name
        _ip("netns", "add", ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        port = f"p{index}"
        _ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", port,
            "netns", SWITCH)
        _ip("-n", ns, "addr", "add", f"{SUBNET}.{octet}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip(*sw, "link", "set", port, "master", BRIDGE)
        _ip(*sw, "link", "set", port, "up")


def cut_off(host: str, address: str) -> None:
    """From ``host``, ``address`` becomes unreachable at once (connect fails fast with
    EHOSTUNREACH, as a router reports a dead network), until :func:`reconnect`."""
    _ip("-n", PREFIX + host, "route", "add", "unreachable", f"{address}/32")


def reconnect(host: str, address: str) -> None:
    _ip("-n", PREFIX + host, "route", "del", "unreachable", f"{address}/32")
