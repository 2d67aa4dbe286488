"""Where the bot process's CPU goes, by stage: the asyncio loop, decoding, faces, audio, inference.

Why. The pools time their own threads (``cpuS``), but much of a stage's CPU runs on threads the
pool never sees: MediaPipe's graph threads under a face thread, torch's intra-op threads under an
audio forward. Measured at 10 participants, the face pool's own threads accounted for 3 ms of
CPU per frame while MediaPipe spent ~8 ms more on its threads, and all of that used to be counted
as "decode+loop".

How. Every pool thread gives its OS thread its pool's name (:func:`name_native_thread`), and
:func:`name_python_threads` does the same for the Python threads others started (aiortc's
``video-decoder`` threads, named once a peer's receivers run); threads started from them later
(torch's, libvpx's) inherit that name on Linux; MediaPipe names its graph threads ``drishti``.
Linux reports each
thread's CPU in ``/proc/self/task/<tid>/stat``. A thread that already exited is no longer
counted, so these are the CPU seconds of the live threads, which for the bot's long-lived
threads is nearly all. Empty off Linux.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

STAGES = ("loop", "decode", "face", "audio", "inference", "other")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def name_native_thread(name: str, native_id: int | None = None) -> bool:
    """Give an OS thread of this process (default: the calling one) a name (15 bytes at most).

    Linux copies a thread's name to the threads it starts, so the threads a library starts under
    a pool thread carry the pool's name. Never the main thread: its name is the process's in ps.
    """
    if not sys.platform.startswith("linux"):
        return False
    tid = threading.get_native_id() if native_id is None else native_id
    if tid == os.getpid():
        return False
    try:
        Path(f"/proc/self/task/{tid}/comm").write_text(name.encode()[:15].decode(errors="ignore"))
        return True
    except OSError:
        return False


def name_python_threads() -> int:
    """Name the OS thread of every Python thread after it (see :func:`name_native_thread`); how many."""
    named = 0
    for t in threading.enumerate():
        if t.native_id is not None and name_native_thread(t.name, t.native_id):
            named += 1
    return named


def stage_of(name: str) -> str:
    """The stage a thread's name belongs to (pool threads are named ``<pool>-<i>``)."""
    if name == "MainThread":
        return "loop"  # the asyncio loop runs on the main thread (aiortc's receive path too)
    if name.endswith("-decoder") or name.endswith("-decod"):
        return "decode"  # aiortc's decoder threads: "audio-decoder", "video-decoder"
    for stage in ("face", "audio", "inference"):
        if name.startswith(f"{stage}-"):
            return stage
    if name.startswith("drishti"):
        return "face"  # MediaPipe names its graph threads itself; only the face stage runs graphs
    return "other"


def _thread_seconds(task: Path) -> tuple[str, float] | None:
    """(comm, user + system CPU seconds) of one /proc task, None if it is gone."""
    try:
        stat = (task / "stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ..." where comm may hold spaces and parentheses: split at the last ")".
    head, _, rest = stat.rpartition(")")
    fields = rest.split()
    comm = head.partition("(")[2]
    return comm, (int(fields[11]) + int(fields[12])) / _TICKS


def cpu_by_stage() -> dict[str, float]:
    """CPU seconds of this process's live threads per stage (see the module docstring)."""
    if not sys.platform.startswith("linux"):
        return {}
    python_names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    main_comm = Path("/proc/self/comm").read_text().strip()
    out = dict.fromkeys(STAGES, 0.0)
    for task in Path("/proc/self/task").iterdir():
        got = _thread_seconds(task)
        if got is None:
            continue
        comm, seconds = got
        name = python_names.get(int(task.name))
        if name is None:
            # A native thread (MediaPipe's, torch's, aiortc's codecs): named after the thread that
            # started it; the main thread's name means the loop started it.
            name = "MainThread" if comm == main_comm else comm
        out[stage_of(name)] += seconds
    return {k: round(v, 2) for k, v in out.items()}
