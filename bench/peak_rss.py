"""Peak resident memory of processes, as the benchmarks print it.

``VmHWM`` from ``/proc/<pid>/status``, not ``ru_maxrss``: the latter keeps the parent's
high-water mark across ``exec``, so a fresh child started from a big benchmark process
would report the benchmark's peak.
"""

from __future__ import annotations

from pathlib import Path


def peak_rss_kib(pid: int | str = "self") -> int:
    """The process's peak resident set so far (VmHWM), in KiB; 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (every thread's), in pid order."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found.update(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return sorted(found)


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants: a server's master and the workers it forked."""
    pids = [pid]
    for child in children(pid):
        pids += tree(child)
    return pids
