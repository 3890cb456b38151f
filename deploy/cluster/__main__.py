"""``python -m deploy.cluster up [--for SECONDS]``: start the cluster and leave it running
for a human until Ctrl-C (or SECONDS); ``python -m deploy.cluster clean``: remove what a
killed run left (its namespaces and the processes in them)."""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time

from . import network
from .hosts import Cluster, address, temporary_root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.cluster")
    parser.add_argument("command", choices=["up", "clean"])
    parser.add_argument("--for", dest="seconds", type=float, default=None,
                        help="tear down after this many seconds (default: at Ctrl-C)")
    args = parser.parse_args(argv)
    if args.command == "clean":
        network.remove_all()
        return 0
    problem = network.netns_permitted()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    cluster = Cluster(temporary_root())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    started = time.monotonic()
    try:
        cluster.up()
        print(f"cluster up in {time.monotonic() - started:.1f}s; files in {cluster.root}")
        for host in cluster.hosts:
            print(f"  {host:<9} {address(host)}  ip netns exec {network.PREFIX}{host} ...")
        print(f"web: {cluster.web_url} (from {network.PREFIX}client); DICOM: PORTAL at "
              f"{address('lb-dicom')}:11112 as MODALITY; Ctrl-C tears it all down")
        deadline = None if args.seconds is None else time.monotonic() + args.seconds
        while deadline is None or time.monotonic() < deadline:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.down()
        shutil.rmtree(cluster.root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
