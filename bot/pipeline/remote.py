"""The predictor in a child process, so that its Python work shares no GIL with the asyncio loop.

Why. At 10 participants the loop thread (aiortc's receive path) and the compute threads fought
over one GIL: every C call the loop makes (SRTP, ``recvfrom``, queue hand-offs) releases the GIL
and must win it back, and the compute's glue (the predictor's numpy, Wav2Vec2's per-layer Python,
MediaPipe's result conversion) holds it between its kernels (docs/engine.md, "Where the loop's time
goes at 10 participants"). With the predictor in a child process no step ran late any more, and
end-to-end p50 at 10 participants went from 407-568 ms to 340 ms. The Wav2Vec2 embedder and the
face extractors were measured in children too and stayed in-process: no gain, and a face costs
more wall time when its frame crosses a pipe ("Compute in child processes: what was measured").

:class:`ChildProcess` builds an object in a spawned child (``factory(*args)`` returns the object
and a picklable description of it) and calls its methods over a pipe. The pool thread that calls
waits without the GIL while the child computes. The child runs the same code as the parent would,
so its outputs equal the in-process ones. It runs at least at ``nice``; a child started from a
niced thread already inherits that thread's value. Errors in the child come back as
``RuntimeError`` with the child's message. A child that died is started again on the next call,
and the call that found it dead fails (the pool counts it, the step goes on without it). A child
whose parent dies sees its pipe close and exits.

:class:`ProcessPredictor` is the user: a ``models.family.BatchPredictor`` over one child. The
child's CPU time comes back with each answer and is charged to the calling pool thread, so the
inference pool's ``cpuS`` stays what inference costs.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bot.pipeline.pools import charge_thread_cpu

log = logging.getLogger(__name__)

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
START_TIMEOUT_S = 300.0  # loading a production bundle takes seconds; a stuck child must not hang the bot


def _lower_own_priority(nice: int) -> None:
    """Raise this (child) process's nice value to at least ``nice``; never lower it."""
    if nice <= 0 or not sys.platform.startswith("linux"):
        return
    try:
        if os.getpriority(os.PRIO_PROCESS, 0) < nice:
            os.setpriority(os.PRIO_PROCESS, 0, min(19, nice))
    except OSError:  # a sandbox without setpriority: run at the inherited priority
        pass


def _serve(
    conn: Connection, factory: Callable[..., tuple[Any, Any]], args: tuple[Any, ...], nice: int, threads: int
) -> None:
    """Child process: build the object, then answer ``(method, args)`` calls until the pipe closes."""
    obj: Any = None
    try:
        # Before the factory's imports: the threads its libraries start inherit the priority, and
        # OpenMP sizes its pool from the environment when it loads, like the parent's pools.
        _lower_own_priority(nice)
        for var in THREAD_ENV:
            os.environ[var] = str(threads)
        obj, info = factory(*args)
        if "torch" in sys.modules:  # the object's torch, if it has one, whatever it read at import
            sys.modules["torch"].set_num_threads(threads)
        from threadpoolctl import threadpool_limits

        # BLAS pools loaded before the environment was set (numpy's, imported with this module).
        threadpool_limits(limits=threads)
    except Exception as exc:  # reported to the parent, which raises it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", info))
    try:
        while True:
            try:
                method, call_args = conn.recv()
            except (EOFError, OSError):
                return  # the parent closed the pipe or died
            c0 = time.process_time()  # every thread of the child: MediaPipe's and torch's too
            try:
                conn.send(("ok", getattr(obj, method)(*call_args), time.process_time() - c0))
            except Exception as exc:
                conn.send(("error", f"{type(exc).__name__}: {exc}", time.process_time() - c0))
    finally:
        close = getattr(obj, "close", None)
        if callable(close):
            close()


class ChildProcess:
    """An object built by ``factory(*args)`` in a spawned child process (see the module docstring).

    ``factory`` must be a module-level function (the child imports it by name). With ``wait=False``
    the constructor returns at once and the first :meth:`call` (or :meth:`wait_ready`) waits for the
    child, so that several children, or a child and the parent's own loading, start in parallel.
    """

    def __init__(
        self,
        name: str,
        factory: Callable[..., tuple[Any, Any]],
        args: tuple[Any, ...] = (),
        *,
        nice: int = 0,
        torch_threads: int = 1,
        wait: bool = True,
    ) -> None:
        self.name = name
        self.factory = factory
        self.args = args
        self.nice = nice
        self.torch_threads = max(1, torch_threads)
        self.starts = 0
        self.cpu_s = 0.0  # CPU time the child spent in calls
        self.info: Any = None
        # One call at a time on the pipe: several pool threads or engines may share this.
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._proc: Any = None
        self._ready = False
        self._spawn()
        if wait:
            self.wait_ready()

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else int(self._proc.pid)

    def _spawn(self) -> None:
        ctx = mp.get_context("spawn")  # no fork: the parent runs threads (torch, MediaPipe, asyncio)
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=_serve,
            args=(child, self.factory, self.args, self.nice, self.torch_threads),
            name=self.name,
            daemon=True,
        )
        proc.start()
        child.close()
        self._conn, self._proc, self._ready = parent, proc, False

    def wait_ready(self) -> Any:
        """Wait until the child has built its object; its description, or RuntimeError with why not."""
        with self._lock:
            self._wait_ready_locked()
        return self.info

    def _wait_ready_locked(self) -> None:
        if self._ready:
            return
        conn, proc = self._conn, self._proc
        if conn is None or proc is None:
            raise RuntimeError(f"{self.name} is closed")
        try:
            if not conn.poll(START_TIMEOUT_S):
                proc.kill()
                raise RuntimeError(f"{self.name} did not start within {START_TIMEOUT_S:.0f} s")
            kind, payload = conn.recv()
        except (EOFError, OSError):
            self._proc = None
            raise RuntimeError(f"{self.name} exited at start (exit code {proc.exitcode})") from None
        if kind != "ready":
            proc.join(5)
            self._proc = None
            raise RuntimeError(f"{self.name} could not start: {payload}")
        self.info, self._ready = payload, True
        self.starts += 1

    def call(self, method: str, *args: Any) -> Any:
        """Run ``obj.method(*args)`` in the child and return its result."""
        with self._lock:
            if self._proc is None or (self._ready and not self._proc.is_alive()):
                log.warning("%s is not running; starting it again", self.name)
                self._spawn()
            self._wait_ready_locked()
            assert self._conn is not None
            try:
                self._conn.send((method, args))
                kind, payload, cpu_s = self._conn.recv()
            except (EOFError, OSError) as exc:
                self._proc = None
                raise RuntimeError(f"{self.name} died ({type(exc).__name__}); it restarts on the next call") from exc
        self.cpu_s += cpu_s
        charge_thread_cpu(cpu_s)  # the calling pool counts the child's CPU as its stage's
        if kind != "ok":
            raise RuntimeError(str(payload))
        return payload

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            if self._proc is not None:
                self._proc.join(5)
                if self._proc.is_alive():
                    self._proc.kill()
            self._conn = self._proc = None
            self._ready = False


# -- the predictor ------------------------------------------------------------------------------


def _load_predictor(bundle_dir: str, torch_threads: int) -> tuple[Any, None]:
    from models.family import load_any_bundle

    try:
        return load_any_bundle(Path(bundle_dir)).make_predictor(torch_threads), None
    except Exception as exc:
        raise RuntimeError(f"predictor process could not load {bundle_dir}: {type(exc).__name__}: {exc}") from exc


class ProcessPredictor:
    """A bundle's batch predictor served by a child process (a ``models.family.BatchPredictor``)."""

    def __init__(self, bundle_dir: Path, torch_threads: int = 1, nice: int = 0, *, wait: bool = True) -> None:
        self.bundle_dir = Path(bundle_dir)
        self.torch_threads = max(1, torch_threads)
        self.child = ChildProcess(
            "hoovik-predictor",
            _load_predictor,
            (str(self.bundle_dir), self.torch_threads),
            nice=nice,
            torch_threads=self.torch_threads,
            wait=wait,
        )

    @property
    def pid(self) -> int | None:
        return self.child.pid

    @property
    def starts(self) -> int:
        return self.child.starts

    def wait_ready(self) -> None:
        self.child.wait_ready()

    def predict_batch(self, xf: Any, xa: Any, fm: Any, am: Any) -> list[Any]:
        return list(self.child.call("predict_batch", xf, xa, fm, am))

    def close(self) -> None:
        self.child.close()
