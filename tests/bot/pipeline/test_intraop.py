"""Torch intra-op threads chosen by load (bot/pipeline/intraop.py): every core for a Wav2Vec2
forward while the bot is light, one thread per pool thread once it is not."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import numpy as np
import torch

from bot.config import EngineConfig
from bot.pipeline.intraop import IntraOpThreads, available_cores
from bot.pipeline.results import EmotionResult
from models.constants import AUDIO_DIM
from tests.bot.live.test_slow_audio import Clock, fake_engine


class FakeTorch:
    """torch's process-wide thread count, as a value the test can read and others can change."""

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads
        self.sets: list[int] = []

    def get(self) -> int:
        return self.threads

    def set(self, n: int) -> None:
        self.threads = n
        self.sets.append(n)


def test_the_choice_lands_when_a_pool_thread_applies_it() -> None:
    fake = FakeTorch()
    threads = IntraOpThreads(1, 4, getter=fake.get, setter=fake.set)
    assert threads.apply() == 1 and fake.sets == []  # already 1: nothing to do
    assert threads.choose(light=True) == 4
    assert fake.threads == 1  # choosing (on the loop) never touches torch
    threads.apply()
    assert fake.threads == 4 and threads.boosted
    threads.apply()
    assert fake.sets == [4]
    # Another thread pinned its own count (the transformer does): the next forward re-applies.
    fake.threads = 1
    threads.apply()
    assert fake.sets == [4, 4]
    threads.choose(light=False)
    threads.apply()
    assert fake.threads == 1 and not threads.boosted and threads.changes == 3
    assert threads.snapshot() == {"threads": 1, "base": 1, "boost": 4, "changes": 3}


def test_the_boost_defaults_to_every_core_and_never_goes_below_the_base() -> None:
    assert IntraOpThreads(1).boost == available_cores()
    assert IntraOpThreads(3, 2).boost == 3
    assert IntraOpThreads(0).base == 1


def test_apply_sets_torch_s_own_thread_count() -> None:
    before = torch.get_num_threads()
    try:
        threads = IntraOpThreads(1, 2)
        threads.choose(light=True)
        threads.apply()
        assert torch.get_num_threads() == 2
        threads.choose(light=False)
        threads.apply()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


class RecordingEmbedder:
    """Records torch's (fake) thread count at each forward."""

    def __init__(self, fake: FakeTorch) -> None:
        self.fake = fake
        self.seen: list[int] = []

    def embed(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        self.seen.append(self.fake.threads)
        return np.zeros((len(windows), AUDIO_DIM), np.float32)


async def test_the_engine_boosts_forwards_only_while_few_participants_are_analysed() -> None:
    clock, fake = Clock(), FakeTorch()
    embedder = RecordingEmbedder(fake)
    results: list[EmotionResult] = []
    engine = fake_engine(
        embedder,
        clock,
        results.append,
        EngineConfig(boost_max_participants=2),
        audio_wait_s=0.5,
        intra_op=IntraOpThreads(1, 2, getter=fake.get, setter=fake.set),
    )
    rng = np.random.default_rng(0)

    async def run(seconds: float) -> list[int]:
        start = len(embedder.seen)
        for _ in range(round(seconds / 0.02)):
            clock.t += 0.02
            for pid in engine.participants:
                engine.on_audio(pid, (rng.standard_normal(320) * 0.1).astype(np.float32), clock.t)
            engine.tick()
            while engine._steps:
                await asyncio.wait(list(engine._steps), timeout=0.01)
        return embedder.seen[start:]

    try:
        engine.add_participant("a", "a")
        alone = await run(3.0)
        for pid in ("b", "c"):
            engine.add_participant(pid, pid)
        await run(0.6)  # the choice changes at the next group; let it
        crowded = await run(3.0)
        engine.remove_participant("b")
        engine.remove_participant("c")
        await run(0.6)
        alone_again = await run(3.0)
        snapshot = engine.snapshot()["intraOp"]
    finally:
        await engine.stop()
    assert alone and set(alone) == {2}, alone
    assert crowded and set(crowded) == {1}, crowded
    assert alone_again and set(alone_again) == {2}, alone_again
    assert results
    assert snapshot["boost"] == 2 and snapshot["changes"] >= 3


class SleepyEmbedder:
    """A Wav2Vec2 forward that takes 0.2 s of real time: above the face's bound (0.15 s), below the
    light wait (0.25 s)."""

    def embed(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        time.sleep(0.2)
        return np.zeros((len(windows), AUDIO_DIM), np.float32)


async def test_a_light_engine_waits_for_the_fresh_window_a_busy_one_does_not() -> None:
    """Alone, a speaker's result carries its own window; with three analysed (not light), steps
    give up on the window after the face's bound and predict with the one before."""

    async def late_and_embedded(speakers: int) -> tuple[int, int]:
        clock = Clock()
        engine = fake_engine(SleepyEmbedder(), clock, lambda r: None, EngineConfig(boost_max_participants=2))
        rng = np.random.default_rng(1)
        try:
            for i in range(speakers):
                engine.add_participant(f"p{i}", f"p{i}")
            for _ in range(round(2.4 / 0.02)):
                clock.t += 0.02
                for pid in engine.participants:
                    engine.on_audio(pid, (rng.standard_normal(320) * 0.1).astype(np.float32), clock.t)
                engine.tick()
                while engine._steps:  # the clock stands still: waits run on real time
                    await asyncio.wait(list(engine._steps), timeout=0.01)
            st = engine.participants["p0"]
            return st.counters.get("audio_late", 0), st.counters.get("audio_embedded", 0)
        finally:
            await engine.stop()

    late, embedded = await late_and_embedded(1)
    assert embedded >= 4 and late == 0, (late, embedded)
    late, embedded = await late_and_embedded(3)
    assert late >= 1, (late, embedded)
