"""Memory freed while loading models goes back to the OS (bot/runtime.py ``release_freed_heap``).

The mechanism it undoes, reproduced with plain allocations: after a large mapped block is freed,
glibc serves later multi-megabyte blocks from the heap, and freeing them leaves them resident.
"""

from __future__ import annotations

import sys

import numpy as np
import psutil
import pytest

from bot.runtime import release_freed_heap

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim is Linux-only")


def test_memory_freed_after_a_large_temporary_is_returned() -> None:
    rss = psutil.Process().memory_info
    big = np.ones(24 << 20, np.uint8)  # a freed mapped block (< 32 MiB) raises the threshold
    del big
    # 256 MiB of weights-sized blocks, each followed by a small block that stays (as the loaded
    # model's own objects do): the freed blocks are holes glibc cannot trim from the heap's top.
    blocks, kept = [], []
    for _ in range(64):
        blocks.append(np.ones(4 << 20, np.uint8))
        kept.append(np.ones(64 << 10, np.uint8))
    del blocks
    before = rss().rss
    assert release_freed_heap() is True
    after = rss().rss
    assert before - after >= 128 << 20, (before >> 20, after >> 20)
    assert len(kept) == 64
