"""Speakers and profiles under a slow audio stage (docs/engine.md, "Profiles and speakers under load").

The engine runs on an injected clock, ticked by the test as in test_overload.py. The audio stage is
deliberately slow *in clock time*: an embedding comes back only once the clock has moved
``EMBED_S`` past the moment its forward started (the audio thread waits for the test's clock), so
every speaker's window is still in flight at several of its following steps. What is asserted is
the engine's reaction, never a speed: speakers keep the step rate of the silent (a step waits for
its window at most ``audio_wait_s``), and a speaker's results stay ``both`` while both streams flow
(an embedding in flight keeps the audio current).
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from bot.config import EngineConfig
from bot.live.engine import Engine
from bot.pipeline.results import BundleInfo, EmotionResult
from models.constants import AUDIO_DIM, FACE_DIM
from models.sequence import NormStats

TICK = 0.02
EMBED_S = 1.0  # clock seconds per Wav2Vec2 forward: more than three periods


@dataclass
class Clock:
    t: float = 1000.0

    def __call__(self) -> float:
        return self.t


class Face:
    def extract(self, rgb: np.ndarray) -> Any:
        return SimpleNamespace(vector=np.full(FACE_DIM, float(rgb.mean()) / 255.0, np.float32), reason=None)

    def close(self) -> None:
        pass


class SlowEmbedder:
    """Returns only once the injected clock is ``EMBED_S`` past the start of the forward."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.waiting: list[float] = []  # deadlines of the forwards now running
        self.returned = 0  # windows embedded so far

    def embed(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        deadline = self.clock.t + EMBED_S
        with self.lock:
            self.waiting.append(deadline)
        while self.clock.t < deadline:
            threading.Event().wait(0.001)
        with self.lock:
            self.waiting.remove(deadline)
            self.returned += len(windows)
        return np.stack([np.full(AUDIO_DIM, 0.5, np.float32) for _ in windows])

    def due(self) -> bool:
        """A forward whose deadline has passed has not returned yet."""
        with self.lock:
            return any(d <= self.clock.t for d in self.waiting)


class Vad:
    def is_speech(self, windows: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        probs = np.array([0.9 if np.max(np.abs(w)) > 0.05 else 0.1 for w in windows], np.float32)
        return probs >= 0.5, probs


class Predictor:
    def predict_batch(self, xf: np.ndarray, xa: np.ndarray, fm: np.ndarray, am: np.ndarray) -> list[Any]:
        return [
            SimpleNamespace(status="ok", probs=np.full(6, 1 / 6, np.float32), anomaly=None, error=None)
            for _ in range(len(xf))
        ]


def _resolved(engine: Engine) -> int:
    """Speech windows whose embedding the engine has applied (or lost)."""
    keys = ("audio_embedded", "audio_errors", "audio_dropped")
    return sum(st.counters.get(k, 0) for st in engine.participants.values() for k in keys)


async def _settle(engine: Engine, embedder: SlowEmbedder) -> None:
    """Until every step of this tick has finished and every forward the clock has released has
    been applied; forwards still waiting for the clock stay in flight."""
    for _ in range(2000):
        busy = bool(engine._steps or engine.face_pool.depth or engine.inference_pool.depth)
        if not busy and not embedder.due() and _resolved(engine) == embedder.returned:
            return
        if engine._steps:
            await asyncio.wait(list(engine._steps), timeout=0.002)
        else:
            await asyncio.sleep(0.001)
    raise AssertionError("engine work did not settle")


def fake_engine(
    embedder: Any,
    clock: Clock,
    on_result: Callable[[EmotionResult], None],
    config: EngineConfig | None = None,
    **kw: Any,
) -> Engine:
    """An engine on the injected clock with the fakes above (tests/bot/pipeline reuses it)."""
    return Engine(
        config or EngineConfig(),
        predictor=Predictor(),
        norm=NormStats(np.zeros(FACE_DIM), np.ones(FACE_DIM), np.zeros(AUDIO_DIM), np.ones(AUDIO_DIM)),
        make_face_extractor=Face,
        audio_embedder=embedder,
        bundle=BundleInfo("fake", True),
        on_result=on_result,
        vad=Vad,  # type: ignore[arg-type]  # duck-typed detector
        clock=clock,
        wall_clock=lambda: clock.t + 1.7e9,
        **kw,
    )


async def test_speakers_keep_the_rate_of_the_silent_and_stay_both_while_their_audio_is_slow() -> None:
    clock = Clock()
    embedder = SlowEmbedder(clock)
    results: list[EmotionResult] = []
    engine = fake_engine(
        embedder,
        clock,
        results.append,
        # Real seconds while the clock stands still: the bound is what matters, not its size.
        audio_wait_s=0.01,
        batch_hold_s=0.05,
    )
    speakers, silent = ["s0", "s1"], ["q0", "q1", "q2", "q3"]
    rng = np.random.default_rng(0)
    frame = np.full((8, 8, 3), 120, np.uint8)
    try:
        for pid in speakers + silent:
            engine.add_participant(pid, pid)
        warm_until = clock.t + 3.0
        for tick in range(1, round(12.0 / TICK) + 1):
            clock.t += TICK
            for pid in engine.participants:
                level = 0.3 if pid in speakers else 0.01  # quiet but not digital silence
                engine.on_audio(pid, (rng.standard_normal(320) * level / 3).astype(np.float32), tick * TICK)
                if tick % 5 == 0:  # 10 fps video: both streams flow the whole time
                    engine.on_video_frame(pid, frame, tick * TICK)
            engine.tick()
            await _settle(engine, embedder)
        counters = {pid: dict(engine.participants[pid].counters) for pid in speakers}
    finally:
        await engine.stop()

    late = [r for r in results if r.ts_ms >= (warm_until + 1.7e9) * 1000]
    rates = Counter(r.participant_id for r in late)
    everyone = speakers + silent
    # Speakers and the silent within 2x of each other: nobody below half the mean.
    mean = sum(rates[p] for p in everyone) / len(everyone)
    assert min(rates[p] for p in everyone) >= 0.5 * mean, rates
    assert min(rates[p] for p in speakers) >= 0.5 * max(rates[p] for p in silent), rates
    # Not by slowing everyone to the speakers' pace: the step rate holds (9 s at 3.33/s).
    assert min(rates[p] for p in everyone) >= 0.9 * 9.0 / 0.3, rates
    # The slow path was taken: windows outlived their steps, later steps found them in flight...
    for pid in speakers:
        assert counters[pid].get("audio_late", 0) >= 5, counters
        assert counters[pid].get("audio_busy", 0) >= 10, counters
        assert counters[pid].get("audio_embedded", 0) >= 5, counters
    # ...and every speaker result said both, while every silent one said video only (the VAD).
    assert Counter(r.modality for r in late if r.participant_id in speakers) == Counter(
        {"both": sum(rates[p] for p in speakers)}
    )
    assert {r.modality for r in late if r.participant_id in silent} == {"video_only"}
