"""The listener's SQLite backend (dimse.reused_sqlite): a connection an association's thread
closes is kept for the next thread instead of a new one being opened, and is handed out
only as a new one would be: outside any transaction, unbroken, with no stale snapshot.

The backend is tested as the listener uses it: real SQLite files in WAL mode, a Django
connection per thread (a connection handler of the test's own, on files of its own), and
real threads opening and closing them. SQLite connections are counted as SQLite makes them
(a ``factory`` for ``sqlite3.connect``).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.db.utils import ConnectionHandler, OperationalError, ProgrammingError

from dimse.reused_sqlite import base as reused

T = TypeVar("T")


class CountedConnection(sqlite3.Connection):
    """A SQLite connection that counts itself: one per file really opened."""

    opened = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        CountedConnection.opened += 1


@pytest.fixture(autouse=True)
def nothing_kept(django_db_blocker: Any) -> Iterator[None]:
    """Each test starts with no connection kept and leaves none open."""
    CountedConnection.opened = 0
    with django_db_blocker.unblock():
        yield
    with reused._lock:
        for kept in reused._idle.values():
            for raw in kept:
                raw.close()
        reused._idle.clear()


def databases(path: Path) -> ConnectionHandler:
    """Per-thread Django connections to the SQLite file ``path``, with the backend and the
    options the listener runs with."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as setup:
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute("CREATE TABLE IF NOT EXISTS item (name TEXT)")
    setup.close()
    return ConnectionHandler({"default": {
        "ENGINE": "dimse.reused_sqlite", "NAME": str(path),
        "OPTIONS": {"init_command": "PRAGMA synchronous=NORMAL;", "timeout": 30,
                    "factory": CountedConnection},
    }})


@pytest.fixture
def db(tmp_path: Path) -> ConnectionHandler:
    return databases(tmp_path / "portal.sqlite3")


def in_a_thread(work: Callable[[], T]) -> T:
    """``work``'s result, run in a thread of its own that then ends (as an association's)."""
    results: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(work())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    if errors:
        raise errors[0]
    return results[0]


def connect_and_close(db: ConnectionHandler) -> Any:
    """What an association's thread does: connect, query, close. Returns the connection."""
    wrapper = db["default"]
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM item")
    raw = wrapper.connection
    wrapper.close()
    return raw


def count_items(db: ConnectionHandler) -> tuple[Any, int]:
    wrapper = db["default"]
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM item")
        (count,) = cursor.fetchone()
    raw = wrapper.connection
    wrapper.close()
    return raw, count


def commit_an_item(path: Path) -> None:
    """Another connection (the web server, another worker) adds an item."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("INSERT INTO item VALUES ('from elsewhere')")
    other.close()


def is_closed(raw: sqlite3.Connection) -> bool:
    try:
        raw.execute("SELECT 1")
    except sqlite3.ProgrammingError:
        return True
    return False


def test_a_connection_one_thread_closed_is_the_next_threads_connection(db):
    first = in_a_thread(lambda: connect_and_close(db))
    second = in_a_thread(lambda: connect_and_close(db))
    assert second is first
    assert CountedConnection.opened == 1
    assert not is_closed(first)


def test_a_kept_connection_sees_what_another_connection_committed_since(db, tmp_path):
    first, before = in_a_thread(lambda: count_items(db))
    commit_an_item(tmp_path / "portal.sqlite3")
    second, after = in_a_thread(lambda: count_items(db))
    assert second is first
    assert (before, after) == (0, 1)


def test_a_query_its_last_thread_left_unfinished_leaves_no_stale_snapshot(db, tmp_path):
    """An unfinished SELECT holds a read snapshot that SQLite does not report as a
    transaction; closing the connection ends it, kept or not."""
    path = tmp_path / "portal.sqlite3"
    for _ in range(3):
        commit_an_item(path)
    left: list[Any] = []

    def read_one_row_and_close() -> Any:
        wrapper = db["default"]
        cursor = wrapper.cursor()
        cursor.execute("SELECT name FROM item")
        cursor.fetchone()  # two rows left unread, the cursor left open
        left.append(cursor)
        raw = wrapper.connection
        wrapper.close()
        return raw

    first = in_a_thread(read_one_row_and_close)
    commit_an_item(path)
    second, count = in_a_thread(lambda: count_items(db))
    assert second is first
    assert count == 4
    with pytest.raises(ProgrammingError):  # as after a real close
        left[0].fetchone()


def test_a_connection_closed_inside_a_transaction_is_closed_not_handed_out(db):
    def write_without_committing() -> Any:
        wrapper = db["default"]
        wrapper.set_autocommit(False)
        with wrapper.cursor() as cursor:
            cursor.execute("INSERT INTO item VALUES ('never committed')")
        raw = wrapper.connection
        wrapper.close()
        return raw

    abandoned = in_a_thread(write_without_committing)
    second, count = in_a_thread(lambda: count_items(db))
    assert second is not abandoned
    assert is_closed(abandoned)
    assert count == 0  # rolled back, not carried over to the next thread
    assert CountedConnection.opened == 2


def test_a_connection_closed_inside_an_explicit_read_transaction_is_not_handed_out(
    db, tmp_path,
):
    def read_in_a_transaction() -> Any:
        wrapper = db["default"]
        with wrapper.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute("SELECT count(*) FROM item")
        raw = wrapper.connection
        wrapper.close()
        return raw

    abandoned = in_a_thread(read_in_a_transaction)
    commit_an_item(tmp_path / "portal.sqlite3")
    second, count = in_a_thread(lambda: count_items(db))
    assert second is not abandoned
    assert is_closed(abandoned)
    assert count == 1


def test_a_connection_whose_query_failed_is_closed_not_handed_out(db):
    def fail_and_close() -> Any:
        wrapper = db["default"]
        with pytest.raises(OperationalError), wrapper.cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table")
        raw = wrapper.connection
        wrapper.close()
        return raw

    failed = in_a_thread(fail_and_close)
    second = in_a_thread(lambda: connect_and_close(db))
    assert second is not failed
    assert is_closed(failed)
    assert CountedConnection.opened == 2


def hold_at_once(db: ConnectionHandler, threads: int) -> list[Any]:
    """The connections of ``threads`` threads that all hold one at once, then close it."""
    all_open = threading.Barrier(threads)
    held: list[Any] = []
    lock = threading.Lock()

    def hold_then_close() -> None:
        wrapper = db["default"]
        wrapper.ensure_connection()
        all_open.wait(10)
        with lock:
            held.append(wrapper.connection)
        wrapper.close()

    workers = [threading.Thread(target=hold_then_close) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert len(set(map(id, held))) == threads
    return held


def test_at_most_kept_connections_are_kept_and_the_others_really_closed(db):
    first = hold_at_once(db, reused.KEPT + 2)
    assert CountedConnection.opened == reused.KEPT + 2
    assert sum(is_closed(raw) for raw in first) == 2
    kept = [raw for raw in first if not is_closed(raw)]
    # The next threads take the kept ones; one more than that opens its own.
    second = hold_at_once(db, reused.KEPT + 1)
    assert CountedConnection.opened == reused.KEPT + 3
    assert {id(raw) for raw in kept} < {id(raw) for raw in second}


def test_threads_connecting_at_once_never_share_a_connection(db):
    holding: set[int] = set()
    shared: list[int] = []
    lock = threading.Lock()

    def associations() -> None:
        for _ in range(50):
            wrapper = db["default"]
            wrapper.ensure_connection()
            raw = id(wrapper.connection)
            with lock:
                if raw in holding:
                    shared.append(raw)
                holding.add(raw)
            with wrapper.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM item")
            time.sleep(0.001)  # the association goes on while the others connect
            with lock:
                holding.discard(raw)
            wrapper.close()

    workers = [threading.Thread(target=associations) for _ in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert shared == []
    assert CountedConnection.opened <= 6  # reused, not one per association


def test_a_connection_is_handed_only_to_threads_of_its_own_database(tmp_path):
    one, other = databases(tmp_path / "one.sqlite3"), databases(tmp_path / "other.sqlite3")
    commit_an_item(tmp_path / "other.sqlite3")
    first = in_a_thread(lambda: connect_and_close(one))
    second, count = in_a_thread(lambda: count_items(other))
    assert second is not first
    assert count == 1  # other's item, read from other's file
