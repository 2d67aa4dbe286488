"""CPU by stage (bot/pipeline/cpu.py): library threads started under a pool thread count for it."""

from __future__ import annotations

import _thread
import sys
import threading
import time
from pathlib import Path

import pytest

from bot.pipeline.cpu import STAGES, cpu_by_stage, name_native_thread, name_python_threads, stage_of

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread /proc is Linux's")


def test_thread_names_map_to_stages() -> None:
    assert stage_of("MainThread") == "loop"
    assert stage_of("video-decoder") == stage_of("audio-decoder") == stage_of("video-decod") == "decode"
    assert [stage_of(f"{p}-1") for p in ("face", "audio", "inference")] == ["face", "audio", "inference"]
    assert stage_of("drishti") == "face"  # MediaPipe's graph threads
    assert stage_of("asyncio_0") == stage_of("Thread-3") == stage_of("faces") == "other"


@linux_only
def test_a_library_thread_started_under_a_pool_thread_counts_for_that_pool() -> None:
    release, spun = threading.Event(), threading.Event()
    library_tid: list[int] = []

    def library_thread() -> None:
        # Started with _thread, as a C library starts its own: unknown to the threading module.
        library_tid.append(threading.get_native_id())
        end = time.thread_time() + 0.4
        while time.thread_time() < end:
            pass
        spun.set()
        release.wait(10)

    def pool_thread() -> None:
        assert name_native_thread("face-7")
        _thread.start_new_thread(library_thread, ())
        release.wait(10)

    before = cpu_by_stage()
    t = threading.Thread(target=pool_thread, name="face-7")
    t.start()
    try:
        assert spun.wait(10)
        comm = Path(f"/proc/self/task/{library_tid[0]}/comm").read_text().strip()
        assert comm == "face-7"  # inherited from the thread that started it
        after = cpu_by_stage()
        assert set(after) == set(STAGES)
        assert after["face"] - before["face"] >= 0.3
    finally:
        release.set()
        t.join(10)


@linux_only
def test_python_threads_get_their_names_and_the_main_thread_keeps_the_process_name() -> None:
    process_name = Path("/proc/self/comm").read_text()
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, args=(10,), name="video-decoder")
    t.start()
    try:
        assert name_python_threads() >= 1
        assert Path(f"/proc/self/task/{t.native_id}/comm").read_text().strip() == "video-decoder"
        assert not name_native_thread("renamed")  # called on the main thread: refused
        assert Path("/proc/self/comm").read_text() == process_name
    finally:
        stop.set()
        t.join(10)
