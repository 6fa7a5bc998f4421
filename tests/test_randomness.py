"""Public random bytes drawn a block at a time (service.randomness): the sizes asked for,
never the same bytes twice (across a block's end too), and a forked child never hands out
what its parent will."""

from __future__ import annotations

import os

from service import randomness
from service.randomness import BLOCK_BYTES, public_random_bytes


def test_random_bytes_come_in_the_size_asked_and_never_repeat_across_blocks() -> None:
    drawn = [public_random_bytes(12) for _ in range(3 * BLOCK_BYTES // 12 + 5)]
    assert {len(value) for value in drawn} == {12}
    assert len(set(drawn)) == len(drawn)
    assert len(public_random_bytes(BLOCK_BYTES + 1)) == BLOCK_BYTES + 1


def test_a_forked_child_draws_other_bytes_than_its_parent() -> None:
    public_random_bytes(1)  # the parent holds a started block
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next bytes, then leave at once
        os.write(write, public_random_bytes(16))
        os._exit(0)
    os.close(write)
    child = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 16
    assert child != public_random_bytes(16)
    assert randomness._blocks._at > 0
