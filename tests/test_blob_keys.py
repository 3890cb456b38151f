"""Blob keys: unguessable, spread over 4096 folders over time, but a run of new objects
shares a folder, so storing a series does not create a directory per object."""

from __future__ import annotations

import itertools
import os
import re
from collections import Counter

from imaging import blobs

KEY = re.compile(r"^[0-9a-f]{3}/[0-9a-f]{32}\.dcm$")


def test_keys_are_unique_and_opaque():
    keys = [blobs.new_key() for _ in range(1000)]
    assert len(set(keys)) == 1000
    assert all(KEY.match(key) for key in keys)


def test_consecutive_keys_share_a_folder_then_move_on_to_the_next():
    folders = [blobs.new_key().split("/")[0] for _ in range(10 * blobs.KEYS_PER_FOLDER_TURN)]
    per_folder = Counter(folders)
    # Ten turns' worth of keys: at most eleven folders (the first turn may be half used).
    assert 10 <= len(per_folder) <= 11
    assert max(per_folder.values()) == blobs.KEYS_PER_FOLDER_TURN
    turns = list(dict.fromkeys(folders))
    assert all((int(b, 16) - int(a, 16)) % blobs.FOLDERS == 1 for a, b in itertools.pairwise(turns))


def test_every_folder_gets_its_turn():
    turn = blobs._FolderTurn()
    seen = {turn.next() for _ in range(blobs.FOLDERS * blobs.KEYS_PER_FOLDER_TURN)}
    assert seen == {f"{n:03x}" for n in range(blobs.FOLDERS)}


def test_a_forked_process_starts_its_own_turn_at_a_random_folder():
    blobs.new_key()  # the parent has its turn
    reads, writes = os.pipe()
    starts = set()
    for _ in range(4):
        pid = os.fork()
        if pid == 0:  # the child: report its first folder and leave at once
            os.write(writes, blobs.new_key()[:3].encode())
            os._exit(0)
        os.waitpid(pid, 0)
        starts.add(os.read(reads, 3).decode())
    os.close(reads)
    os.close(writes)
    # Four children starting where the parent is would all report the same folder.
    assert len(starts) > 1
