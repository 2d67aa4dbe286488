"""The predictor in a child process, so that its Python work shares no GIL with the asyncio loop.

Why. At 10 participants the loop thread (aiortc's receive path) and the inference thread fought
over one GIL: every C call the loop makes (SRTP, ``recvfrom``, queue hand-offs) releases the GIL
and must win it back, and the predictor's numpy and torch glue holds it between its kernels
(docs/engine.md, "Where the loop's time goes at 10 participants"). Measured at 10 participants
with the predictor in a child process: no step ran late any more, the inference pool's wall time
per call halved, and end-to-end p50 went from 407-568 ms to 351 ms.

:class:`ProcessPredictor` is a :class:`models.family.BatchPredictor`: the inference thread sends a
batch's arrays over a pipe and waits (without the GIL) for the predictions. The child loads the
bundle from its directory with the same thread count and runs the same predictor code, so its
outputs equal the in-process ones. It runs at ``nice`` like the pool threads. Errors in the child
come back as ``RuntimeError`` with the child's message; a child that died is started again on the
next call, and the call that found it dead fails (the pool counts it, the step is dropped).
A child whose parent dies sees its pipe close and exits.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

START_TIMEOUT_S = 300.0  # loading a production bundle takes seconds; a stuck child must not hang the bot


def _serve(conn: Connection, bundle_dir: str, torch_threads: int, nice: int) -> None:
    """Child process: load the bundle's predictor, then answer batches until the pipe closes."""
    try:
        if nice > 0:
            os.nice(nice)
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(torch_threads)
        threadpool_limits(limits=torch_threads)
        from models.family import load_any_bundle

        predictor = load_any_bundle(Path(bundle_dir)).make_predictor(torch_threads)
    except Exception as exc:  # reported to the parent, which raises it
        conn.send(("error", f"predictor process could not load {bundle_dir}: {type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            batch = conn.recv()
        except (EOFError, OSError):
            return  # the parent closed the pipe or died
        try:
            conn.send(("ok", list(predictor.predict_batch(*batch))))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class ProcessPredictor:
    """A bundle's batch predictor served by a spawned child process (see the module docstring)."""

    def __init__(self, bundle_dir: Path, torch_threads: int = 1, nice: int = 0) -> None:
        self.bundle_dir = Path(bundle_dir)
        self.torch_threads = max(1, torch_threads)
        self.nice = nice
        self.starts = 0
        # One call at a time on the pipe: several engines (a worker's meetings) may share this.
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._proc: Any = None
        self._start()

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else int(self._proc.pid)

    def _start(self) -> None:
        ctx = mp.get_context("spawn")  # no fork: the parent runs threads (torch, MediaPipe, asyncio)
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=_serve,
            args=(child, str(self.bundle_dir), self.torch_threads, self.nice),
            name="hoovik-predictor",
            daemon=True,
        )
        proc.start()
        child.close()
        if not parent.poll(START_TIMEOUT_S):
            proc.kill()
            raise RuntimeError(f"predictor process did not start within {START_TIMEOUT_S:.0f} s")
        try:
            kind, payload = parent.recv()
        except EOFError:
            raise RuntimeError(f"predictor process exited at start (exit code {proc.exitcode})") from None
        if kind != "ready":
            proc.join(5)
            raise RuntimeError(str(payload))
        self._conn, self._proc = parent, proc
        self.starts += 1

    def predict_batch(self, xf: Any, xa: Any, fm: Any, am: Any) -> list[Any]:
        with self._lock:
            if self._proc is None or not self._proc.is_alive():
                log.warning("predictor process is not running; starting it again")
                self._start()
            assert self._conn is not None
            try:
                self._conn.send((xf, xa, fm, am))
                kind, payload = self._conn.recv()
            except (EOFError, OSError) as exc:
                self._proc = None
                raise RuntimeError(
                    f"predictor process died ({type(exc).__name__}); it restarts on the next call"
                ) from exc
        if kind != "ok":
            raise RuntimeError(str(payload))
        return list(payload)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            if self._proc is not None:
                self._proc.join(5)
                if self._proc.is_alive():
                    self._proc.kill()
            self._conn = self._proc = None
