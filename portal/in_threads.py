"""Database work on several items at once, in threads of this process: for work that
mostly waits on the network (the replica), so a worker keeps a few items going.

Each thread closes its own database connection when its item is done. Inside a
transaction (tests, eager tasks) the items run one after the other in the caller's
thread: other threads would not see the transaction's rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TypeVar

from django.db import connection

Item = TypeVar("Item")
Result = TypeVar("Result")


def each(work: Callable[[Item], Result], items: Sequence[Item], width: int, *,
         name: str, ordered: bool = True) -> Iterator[Result]:
    """``work(item)`` for every item, at most ``width`` at once: results in the items'
    order, or (``ordered=False``) as each ends."""
    if min(width, len(items)) <= 1 or connection.in_atomic_block:
        yield from map(work, items)
        return

    def in_thread(item: Item) -> Result:
        try:
            return work(item)
        finally:
            connection.close()  # this thread's own connection

    with ThreadPoolExecutor(max_workers=min(width, len(items)),
                            thread_name_prefix=name) as pool:
        if ordered:
            yield from pool.map(in_thread, items)
        else:
            for done in as_completed([pool.submit(in_thread, item) for item in items]):
                yield done.result()
