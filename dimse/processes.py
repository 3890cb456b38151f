"""Several listener processes on one port, so parallel associations use several cores.

pynetdicom serves each association in a thread, but the work of an association (decoding
PDUs, parsing and indexing objects) is Python holding the GIL: two modalities sending at
once shared one core and together were slower than one alone. So, like gunicorn's pre-fork
model, the parent opens the listening socket and forks worker processes that all accept
from it. A worker already serving associations waits a moment before it accepts, so a new
association goes to an idle worker when there is one. The parent only restarts workers
that die and stops them all on SIGTERM or SIGINT.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

from django.db import connections
from pynetdicom.transport import ThreadedAssociationServer

from imaging import ingest

from .handlers import Listener
from .indexing import recover

log = logging.getLogger(__name__)

# How long a worker with n live associations waits before it accepts: n times this.
BUSY_ACCEPT_DELAY = 0.02
RESTART_PAUSE = 1.0


def listening_socket(host: str, port: int) -> socket.socket:
    """The shared listening socket: non-blocking, so a worker that lost the race for a
    connection gets an error to ignore instead of waiting for the next one."""
    sock = socket.create_server((host, port), backlog=128)
    sock.setblocking(False)
    return sock


class SharedSocketServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, accepting from a socket that another process opened."""

    shared_socket: socket.socket

    def server_bind(self) -> None:
        if self.socket is not None:
            self.socket.close()
        self.socket = self.shared_socket
        self.server_address = self.shared_socket.getsockname()

    def server_activate(self) -> None:
        """The parent already listens."""

    def server_close(self) -> None:
        # Closing only: a shutdown() would stop the other workers' listening socket too.
        if self.socket is not None:
            self.socket.close()

    # Connections accepted whose association thread is not started yet.
    starting = 0
    starting_lock = threading.Lock()

    def get_request(self) -> tuple[socket.socket, Any]:
        busy = self.starting + len(self.active_associations)
        if busy:
            time.sleep(min(busy, 5) * BUSY_ACCEPT_DELAY)  # let an idle worker take it
        request = super().get_request()  # raises when another worker took the connection
        with self.starting_lock:
            self.starting += 1
        return request

    parent = 0  # the process that forked this worker

    def service_actions(self) -> None:
        """Every half second: a worker whose parent is gone (killed outright, so it could not
        stop its workers) stops too, rather than keep the port open unsupervised."""
        super().service_actions()
        if self.parent and os.getppid() != self.parent:
            os.kill(os.getpid(), signal.SIGTERM)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Create and start the association in this, the accepting, thread, as pynetdicom's
        blocking server does: the threaded one starts a thread only to create the
        association and start the association's own (about 0.8 ms of every association)."""
        self.process_request_thread(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:  # the association's own thread runs from here on
            with self.starting_lock:
                self.starting -= 1


def server_class(sock: socket.socket, parent: int) -> type[SharedSocketServer]:
    return type("SharedSocketServer", (SharedSocketServer,),
                {"shared_socket": sock, "parent": parent})


def _worker(listener: Listener, sock: socket.socket, parent: int) -> None:
    from .server import (
        build_ae,
        event_handlers,
        flush_audit_on_signals,
        prepare_database,
        supported_contexts,
    )

    flush_audit_on_signals()
    prepare_database()
    ae = build_ae(listener)
    server = ae.make_server(
        sock.getsockname(), evt_handlers=event_handlers(listener),
        contexts=supported_contexts(), server_class=server_class(sock, parent),
    )
    server.serve_forever()


def _fork_worker(listener: Listener, sock: socket.socket) -> int:
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the worker: never returns into the parent's code
        status = 0
        try:
            _worker(listener, sock, parent)
        except BaseException:
            log.exception("DICOM listener worker %d stopped", os.getpid())
            status = 1
        finally:
            os._exit(status)
    return pid


def _recover_spool(pid: int) -> None:
    """Index what an ended worker answered for but left unindexed (see dimse.indexing)."""
    try:
        recovered = recover(pid)
    except Exception:
        log.exception("cannot recover the spool of DICOM listener worker %d", pid)
        return
    finally:
        connections.close_all()  # the next worker opens its own
    if recovered:
        log.warning("indexed %d objects DICOM listener worker %d had received",
                    len(recovered), pid)


def serve(listener: Listener, host: str, port: int, processes: int) -> None:
    """Listen on ``host:port`` with ``processes`` workers until SIGTERM or SIGINT."""
    from .server import prepare_pynetdicom

    prepare_pynetdicom()  # before the fork: every worker inherits it
    ingest.prepare()  # the same for what the first stored object would load
    sock = listening_socket(host, port)
    connections.close_all()  # each worker opens its own database connections
    sys.stdout.flush()  # or each worker would write the parent's buffered output again
    sys.stderr.flush()
    workers = {_fork_worker(listener, sock) for _ in range(processes)}
    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(workers):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while workers:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            workers.discard(pid)
            _recover_spool(pid)
            if not stopping:
                log.error("DICOM listener worker %d ended (status %d); starting another",
                          pid, status)
                time.sleep(RESTART_PAUSE)
                if not stopping:
                    workers.add(_fork_worker(listener, sock))
    finally:
        sock.close()
