"""Recognising a calling peer by its AE title and the address it connects from.

The listener looks the calling peer up on every association, before it answers it. Reading
the peer table then cost an association its thread's first database connection and a
query (about 2 ms of a 25 ms C-ECHO), so each process keeps the table in memory
(:data:`directory`) and reads it again:

* at once in the process where a peer is saved or deleted through the ORM (admin,
  ``manage.py dicom_peers``), by ``post_save``/``post_delete`` (:func:`peer_changed`);
* in every other process (the listener's workers, when admin runs in the web server), on
  the first association after ``DICOM_PEER_CACHE_SECONDS`` (default 5) since it was read.

So a change (a peer removed, disabled, given another host or other rights) is in force for
every new association of every listener process at most ``DICOM_PEER_CACHE_SECONDS`` after
it is committed; ``0`` reads the table on every association, as before. Host names are
resolved with the table and kept as long. An association keeps the peer it was accepted as
until it ends, as it always did.
"""

from __future__ import annotations

import copy
import ipaddress
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction

from .models import Peer


def addresses_of(host: str) -> set[str]:
    """The IP addresses ``host`` (a literal address or a name) stands for."""
    try:
        return {str(ipaddress.ip_address(host))}
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return set()
    return {str(ipaddress.ip_address(info[4][0])) for info in infos}


def normalised(address: str) -> str:
    """An IPv4-mapped IPv6 address (``::ffff:10.0.0.5``, as a dual-stack socket reports
    one) as the IPv4 address it is; other addresses in their canonical form."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


@dataclass
class _Table:
    peers: dict[str, Peer]
    read_at: float
    addresses: dict[str, set[str]] = field(default_factory=dict)  # host -> its addresses

    def addresses_of(self, host: str) -> set[str]:
        found = self.addresses.get(host)
        if found is None:
            found = self.addresses[host] = addresses_of(host)
        return found


class PeerDirectory:
    """This process's copy of the peer table, read again when it is older than
    ``DICOM_PEER_CACHE_SECONDS`` or a peer was saved here (see the module's docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._table: _Table | None = None
        self._generation = 0  # counts invalidations: a read older than one is not kept

    def invalidate(self) -> None:
        with self._lock:
            self._table = None
            self._generation += 1

    def _current(self) -> _Table:
        max_age = float(settings.DICOM_PEER_CACHE_SECONDS)
        with self._lock:
            table, generation = self._table, self._generation
        if table is not None and time.monotonic() - table.read_at < max_age:
            return table
        started = time.monotonic()
        table = _Table({peer.ae_title: peer for peer in Peer.objects.all()}, started)
        with self._lock:
            if self._generation == generation:
                self._table = table
        return table

    def recognise(self, ae_title: str, address: str) -> Peer | None:
        table = self._current()
        peer = table.peers.get(ae_title.strip())
        if peer is None or normalised(address) not in table.addresses_of(peer.host):
            return None
        return copy.copy(peer)  # the association's own: the table's is shared


directory = PeerDirectory()


def peer_changed(sender: Any, **kwargs: Any) -> None:
    """``post_save``/``post_delete`` of a peer: this process reads the table again now, and
    once more when the change is committed (a read in between would see the old row)."""
    directory.invalidate()
    transaction.on_commit(directory.invalidate)


def recognise(ae_title: str, address: str) -> Peer | None:
    """The configured peer with this AE title whose host is ``address``, else ``None``.

    A known AE title calling from another host is not that peer: AE titles are easy to
    spoof, so both must match. From this process's copy of the table (see above).
    """
    return directory.recognise(ae_title, address)


def destination(ae_title: str) -> Peer | None:
    """The configured peer a C-MOVE names as its destination, if any (read now: a C-MOVE
    reads the database anyway)."""
    return Peer.objects.filter(ae_title=ae_title.strip()).first()
