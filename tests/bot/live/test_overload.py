"""Overload that stays connected: a lagging asyncio loop slows sampling for everyone, and compute
runs below the loop (docs/engine.md, "Overload that stays connected").

The engine runs on an injected clock, ticked by the test as in test_engine.py; the loop's lag is
fed to the engine's monitor as a measurement would be, so what is asserted is the engine's reaction
to a lagging loop, never a speed. One test measures a loop that the test blocks on purpose: a lower
bound that only the block itself produces.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from bot.config import EngineConfig
from bot.live.engine import Engine
from bot.live.loadguard import LoopLagMonitor, udp_receive_backlog
from bot.pipeline.pools import thread_nice
from bot.pipeline.results import BundleInfo, EmotionResult
from models.constants import AUDIO_DIM, FACE_DIM
from models.sequence import NormStats
from tests.bot.live.test_slow_audio import Clock, Face, Predictor

TICK = 0.02


class Embedder:
    def embed(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack([np.full(AUDIO_DIM, 0.5, np.float32) for _ in windows])


class Vad:
    def is_speech(self, windows: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        probs = np.full(len(windows), 0.9, np.float32)
        return probs >= 0.5, probs


def _engine(clock: Clock, results: list[EmotionResult], **kwargs: Any) -> Engine:
    norm = NormStats(np.zeros(FACE_DIM), np.ones(FACE_DIM), np.zeros(AUDIO_DIM), np.ones(AUDIO_DIM))
    return Engine(
        EngineConfig(),
        predictor=Predictor(),
        norm=norm,
        make_face_extractor=Face,
        audio_embedder=Embedder(),
        bundle=BundleInfo("fake", True),
        on_result=results.append,
        vad=Vad,
        clock=clock,
        wall_clock=lambda: clock.t + 1.7e9,
        **kwargs,
    )


async def _run(engine: Engine, clock: Clock, seconds: float, *, lag_s: float | None, start_tick: int) -> int:
    """Tick the engine for ``seconds`` of clock time, feeding every participant media, with the loop
    reported ``lag_s`` late at every tick (None: on time). Returns the next tick number."""
    frame = np.full((8, 8, 3), 120, np.uint8)
    tick = start_tick
    for _ in range(round(seconds / TICK)):
        clock.t += TICK
        tick += 1
        if lag_s is not None:
            engine.loop_lag.record(lag_s)
        for pid in engine.participants:
            if tick % 3 == 0:
                engine.on_video_frame(pid, frame, tick * TICK)
            engine.on_audio(pid, np.full(320, 0.2, np.float32) * np.sign(np.sin(np.arange(320))), tick * TICK)
        engine.tick()
        for _ in range(500):  # let the started steps finish before the next tick
            if not (engine._steps or engine.face_pool.depth or engine.audio_pool.depth or engine.inference_pool.depth):
                break
            if engine._steps:
                await asyncio.wait(list(engine._steps), timeout=0.005)
            else:
                await asyncio.sleep(0.001)
        else:
            raise AssertionError("engine work did not settle")
    return tick


async def test_a_lagging_loop_lowers_sampling_for_everyone_then_it_recovers() -> None:
    clock, results = Clock(), []
    engine = _engine(clock, results)
    try:
        pids = [f"p{i}" for i in range(6)]
        for pid in pids:
            engine.add_participant(pid, pid)
        t = engine.throttle
        tick = await _run(engine, clock, 2.0, lag_s=None, start_tick=0)
        assert t.decreases == 0 and t.fps == pytest.approx(t.target_fps)
        before = {pid: engine.participants[pid].counters.get("frames_sampled", 0) for pid in pids}

        # The loop runs its timers 250 ms late: nothing else is behind (the fakes are instant).
        tick = await _run(engine, clock, 3.0, lag_s=0.25, start_tick=tick)
        assert t.fps == t.min_fps
        assert t.causes == {"loop_lag": t.decreases} and t.decreases >= 2
        assert all(e.cause == "loop_lag" for e in t.events if e.kind == "decrease")
        snap = engine.snapshot()
        assert snap["loop"]["lagging"] and snap["loop"]["lagMs"] == pytest.approx(250.0)
        assert snap["throttle"]["decreaseCauses"] == {"loop_lag": t.decreases}
        # Everyone samples less, and equally: one shared rate, no participant favoured.
        sampled = {pid: engine.participants[pid].counters.get("frames_sampled", 0) - before[pid] for pid in pids}
        steps = 3.0 / engine.interval
        assert max(sampled.values()) <= 0.6 * steps, sampled
        assert max(sampled.values()) - min(sampled.values()) <= 2, sampled
        # Results keep coming for everyone at the step rate: only sampling was shed.
        tail = [r for r in results if r.ts_ms >= (clock.t - 2.0 + 1.7e9) * 1000]
        counts = {pid: sum(1 for r in tail if r.participant_id == pid) for pid in pids}
        assert min(counts.values()) >= 6, counts

        # The loop catches up: the rate recovers step by step to the ceiling.
        await _run(engine, clock, 8.0, lag_s=0.0, start_tick=tick)
        assert t.fps == pytest.approx(t.target_fps)
        assert t.recoveries >= 4
        assert not engine.snapshot()["loop"]["lagging"]
    finally:
        await engine.stop()


async def test_a_short_hiccup_under_the_limit_does_not_throttle() -> None:
    clock, results = Clock(), []
    engine = _engine(clock, results)
    try:
        for i in range(4):
            engine.add_participant(f"p{i}", f"p{i}")
        await _run(engine, clock, 2.0, lag_s=0.05, start_tick=0)
        assert engine.throttle.decreases == 0
    finally:
        await engine.stop()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
async def test_the_engine_runs_its_compute_below_the_loop() -> None:
    base = thread_nice()
    assert base is not None
    engine = _engine(Clock(), [], compute_nice=7)
    try:
        for pool in (engine.face_pool, engine.audio_pool, engine.inference_pool):
            assert set(pool.thread_nice.values()) == {min(19, base + 7)}, pool.name
        assert thread_nice() == base
    finally:
        await engine.stop()


async def test_start_shortens_the_gil_switch_interval_and_never_lengthens_it() -> None:
    previous = sys.getswitchinterval()
    engine = _engine(Clock(), [], gil_switch_s=0.002)
    try:
        sys.setswitchinterval(0.005)
        await engine.start()
        assert sys.getswitchinterval() == pytest.approx(0.002)
        await engine.stop()
        sys.setswitchinterval(0.001)
        await engine.start()
        assert sys.getswitchinterval() == pytest.approx(0.001)
    finally:
        await engine.stop()
        sys.setswitchinterval(previous)


def test_the_monitor_reports_the_worst_lag_of_the_last_second() -> None:
    clock = Clock()
    mon = LoopLagMonitor(clock, limit_s=0.1)
    mon.record(0.3)
    clock.t += 0.5
    mon.record(0.02)
    assert mon.lag() == pytest.approx(0.3) and mon.lagging()
    clock.t += 0.6  # the 0.3 s sample is now older than the span
    mon.record(0.01)
    assert mon.lag() == pytest.approx(0.02) and not mon.lagging()
    snap = mon.snapshot()
    assert snap["maxMs"] == pytest.approx(300.0) and snap["windowMaxMs"] == pytest.approx(300.0)
    assert snap["laggingSamples"] == 1


async def test_the_monitor_measures_a_loop_that_is_blocked() -> None:
    """A callback that holds the loop for 0.3 s makes the monitor's timer fire at least that late
    (minus its own period): a lower bound that only the block produces."""
    mon = LoopLagMonitor(period_s=0.02)
    mon.start()
    try:
        await asyncio.sleep(0.05)
        blocked = threading.Event()

        def hold() -> None:
            time.sleep(0.3)
            blocked.set()

        asyncio.get_running_loop().call_soon(hold)
        while not blocked.is_set() or mon.max_lag_s == 0.0:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert mon.max_lag_s >= 0.25
    finally:
        await mon.stop()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_udp_backlog_counts_what_this_process_has_not_read() -> None:
    """The telemetry's receive-backlog figure: unread datagrams on this process's UDP sockets."""
    before = udp_receive_backlog()
    assert before is not None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        for _ in range(3):
            s.sendto(b"x" * 1000, s.getsockname())
        queued = udp_receive_backlog()
        assert queued is not None
        assert queued["sockets"] == before["sockets"] + 1
        assert queued["queuedBytes"] >= before["queuedBytes"] + 3000
        for _ in range(3):
            s.recv(2000)
        drained = udp_receive_backlog()
        assert drained is not None and drained["queuedBytes"] <= before["queuedBytes"]
