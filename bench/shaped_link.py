"""An emulated network link between two network namespaces, for the benchmarks that need
one (bench/slow_link.py, bench/replica.py ``--link``).

``{prefix}server`` and ``{prefix}client`` are joined by a point-to-point link with netem's
model in each direction: a packet waits for the link to be free, takes its size over the
direction's rate to send, then the one-way delay to arrive; the queue never drops. Rates
may differ (a clinic's internet link uploads slower than it downloads).

This machine's kernel has no ``sch_netem`` (nor ``fq``, for a BPF departure-time delay):
``tbf`` alone could shape a veth's rate but not delay it. So the link is a TUN device in
each namespace (``eth0``) and a carrier process per direction moves the packets between
them, each delayed as netem would; the packets and TCP are the kernels' own. The carriers
are processes, not threads, so the benchmark's own Python work never stalls the link; they
die with the process that made them (``PR_SET_PDEATHSIG``). Root only.
"""

from __future__ import annotations

import collections
import ctypes
import fcntl
import json
import multiprocessing
import os
import select
import signal
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.sharedctypes import Synchronized

CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def remove_namespaces(prefix: str) -> None:
    """Every namespace named ``prefix...`` removed, its processes killed first (what a
    killed run left behind); other prefixes' are left alone."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                            check=False, timeout=10).stdout
    for line in listed.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(prefix):
            for pid in subprocess.run(["ip", "netns", "pids", name], capture_output=True,
                                      text=True, check=False, timeout=10).stdout.split():
                subprocess.run(["kill", "-KILL", pid], check=False, capture_output=True)
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True,
                           timeout=10)


def _tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def _carry(read_fd: int, write_fd: int, rate: Synchronized[float], delay_s: float,
           stopping: Synchronized[bool]) -> None:
    """One direction of the link, in a process of its own."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it
    queue: collections.deque[tuple[float, bytes]] = collections.deque()
    free_at = 0.0
    while not stopping.value:
        wait = max(0.0, queue[0][0] - time.monotonic()) if queue else 0.05
        ready, _, _ = select.select([read_fd], [], [], wait)
        now = time.monotonic()
        if ready:
            packet = os.read(read_fd, 65536)
            free_at = max(now, free_at) + len(packet) * 8 / rate.value
            queue.append((free_at + delay_s, packet))
        while queue and queue[0][0] <= now:
            try:
                os.write(write_fd, queue.popleft()[1])
            except OSError:
                pass  # the far end is going down


class Link:
    """The two namespaces and the link between them: ``up`` is client to server."""

    def __init__(self, prefix: str, server_ip: str, client_ip: str, *,
                 up_bps: float = 10e6, down_bps: float | None = None,
                 delay_s: float = 0.02) -> None:
        self.server, self.client = f"{prefix}server", f"{prefix}client"
        self.delay_s = delay_s
        context = multiprocessing.get_context("fork")
        self._up = context.Value("d", up_bps, lock=False)
        self._down = context.Value("d", down_bps or up_bps, lock=False)
        self._stopping = context.Value("b", False, lock=False)
        self.fds: dict[str, int] = {}
        for ns, address, peer in ((self.server, server_ip, client_ip),
                                  (self.client, client_ip, server_ip)):
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
            device = f"{prefix}{len(self.fds)}"
            self.fds[ns] = _tun(device)
            ip("link", "set", device, "netns", ns)
            ip("-n", ns, "link", "set", device, "name", "eth0")
            ip("-n", ns, "addr", "add", address, "peer", peer, "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
        self.carriers = [
            context.Process(target=_carry, daemon=True, name=f"{prefix}{name}",
                            args=(self.fds[a], self.fds[b], rate, delay_s, self._stopping))
            for name, a, b, rate in (("up", self.client, self.server, self._up),
                                     ("down", self.server, self.client, self._down))]
        for carrier in self.carriers:
            carrier.start()

    @property
    def rate_bps(self) -> tuple[float, float]:
        return self._up.value, self._down.value

    def set_rates(self, up_bps: float, down_bps: float | None = None) -> None:
        """New rates from the next packet on (both directions alike without ``down_bps``)."""
        self._up.value = up_bps
        self._down.value = down_bps or up_bps

    def stop(self) -> None:
        self._stopping.value = True
        for carrier in self.carriers:
            carrier.join(timeout=2)
            if carrier.is_alive():
                carrier.kill()
                carrier.join(timeout=2)
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}


def interface_bytes(ns: str) -> tuple[int, int]:
    """(received, sent) bytes of the namespace's end of the link, IP and TCP included."""
    out = subprocess.run(["ip", "-n", ns, "-s", "-j", "link", "show", "dev", "eth0"],
                         capture_output=True, text=True, check=True, timeout=10).stdout
    stats = json.loads(out)[0]["stats64"]
    return int(stats["rx"]["bytes"]), int(stats["tx"]["bytes"])


@contextmanager
def inside(ns: str | None) -> Iterator[None]:
    """This thread (and what it starts: processes, threads) in namespace ``ns``; back to
    the machine's own afterwards. None: the machine's own."""
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{ns}", os.O_RDONLY) if ns else None
    try:
        if target is not None and _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns({ns})")
        yield
    finally:
        _libc.setns(home, CLONE_NEWNET)
        os.close(home)
        if target is not None:
            os.close(target)
