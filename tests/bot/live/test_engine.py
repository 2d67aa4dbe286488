"""The real-time engine driven by an injected clock: cadence, profile switches, throttling, bounds.

The pools are the real thread pools; the models are small fakes so that what is tested is the
engine's scheduling. Time is the engine's injected ``clock``: the harness advances it in 20 ms
ticks, feeds media for that tick, calls ``engine.tick()`` and lets the started steps finish
before the next tick. So every bound asserted here is in clock time (behaviour), never wall-clock
speed. The last test checks batched predictor calls against single calls on the golden artefacts.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import tracemalloc
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from bot.config import EngineConfig
from bot.live.engine import Engine
from bot.pipeline.results import BundleInfo, EmotionResult
from bot.pipeline.stages import InferenceJob, inference_stage
from models.bundle import load_bundle
from models.constants import AUDIO_DIM, FACE_DIM, SEQ_LEN
from models.hoovik_import import import_hoovik
from models.predictor import Predictor
from models.sequence import NormStats

TICK = 0.02
VIDEO_EVERY = 3  # ticks: ~16.7 fps
SAMPLES_PER_TICK = 320  # 20 ms at 16 kHz


# -- fakes -----------------------------------------------------------------------------------------


class FakeFace:
    """A face extractor whose vector is the frame's mean; ``gate`` (when cleared) blocks it."""

    def __init__(self, gate: threading.Event) -> None:
        self.gate = gate

    def extract(self, rgb: np.ndarray) -> Any:
        self.gate.wait(30)
        return SimpleNamespace(vector=np.full(FACE_DIM, float(rgb.mean()) / 255.0, np.float32), reason=None)

    def close(self) -> None:
        pass


class FakeEmbedder:
    """Wav2Vec2 stand-in: records the batch sizes and every window's participant marker."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.levels: list[float] = []
        self._lock = threading.Lock()

    def embed(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        with self._lock:
            self.batches.append(len(windows))
            self.levels.extend(float(np.max(np.abs(w))) for w in windows)
        return np.stack([np.full(AUDIO_DIM, float(np.max(np.abs(w))), np.float32) for w in windows])


class FakeVad:
    """Speech iff the window's peak is above 0.05 (tests choose speech by amplitude)."""

    def __init__(self) -> None:
        self.windows = 0

    def is_speech(self, windows: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        self.windows += len(windows)
        probs = np.array([0.9 if np.max(np.abs(w)) > 0.05 else 0.1 for w in windows], np.float32)
        return probs >= 0.5, probs


class FakePredictor:
    """Uniform probabilities; records the size of every predict_batch call."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def predict_batch(self, xf: np.ndarray, xa: np.ndarray, fm: np.ndarray, am: np.ndarray) -> list[Any]:
        self.batches.append(len(xf))
        return [
            SimpleNamespace(status="ok", probs=np.full(6, 1 / 6, np.float32), anomaly=None, error=None)
            for _ in range(len(xf))
        ]


@dataclass
class Clock:
    t: float = 1000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class Feed:
    """What one participant sends each tick: video frames and audio of a given peak level."""

    video: bool = True
    audio: bool = True
    level: float = 0.3  # audio peak; FakeVad calls > 0.05 speech; 0 = digital silence


@dataclass
class Harness:
    engine: Engine
    clock: Clock
    gate: threading.Event
    embedder: FakeEmbedder
    predictor: FakePredictor
    vad: FakeVad
    results: list[tuple[float, EmotionResult]]
    feeds: dict[str, Feed] = field(default_factory=dict)
    ticks: int = 0
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))

    def add(self, pid: str, feed: Feed | None = None, **kwargs: Any) -> None:
        self.engine.add_participant(pid, pid, **kwargs)
        self.feeds[pid] = feed or Feed()

    def of(self, pid: str) -> list[tuple[float, EmotionResult]]:
        return [(t, r) for t, r in self.results if r.participant_id == pid]

    async def run(self, seconds: float, *, wait_faces: bool = True, on_tick: Callable[[], None] | None = None) -> None:
        for _ in range(round(seconds / TICK)):
            self.clock.t += TICK
            self.ticks += 1
            media_time = self.ticks * TICK
            for pid, feed in self.feeds.items():
                if feed.video and self.ticks % VIDEO_EVERY == 0:
                    frame = np.full((8, 8, 3), 100 + hash(pid) % 100, np.uint8)
                    self.engine.on_video_frame(pid, frame, media_time)
                if feed.audio:
                    noise = self.rng.uniform(-1, 1, SAMPLES_PER_TICK).astype(np.float32)
                    self.engine.on_audio(pid, noise * feed.level, media_time)
            self.engine.tick()
            await self.settle(wait_faces)
            if on_tick is not None:
                on_tick()

    async def settle(self, wait_faces: bool) -> None:
        """Let the steps started this tick finish (and, unless faces are blocked, the face jobs)."""
        e = self.engine
        for _ in range(2000):
            busy = bool(e._steps) or e.audio_pool.depth or e.inference_pool.depth
            if wait_faces:
                busy = busy or e.face_pool.depth
            if not busy:
                break
            if e._steps:
                await asyncio.wait(list(e._steps), timeout=0.005)
            else:
                await asyncio.sleep(0.001)
        else:
            raise AssertionError("engine work did not settle")
        for _ in range(3):
            await asyncio.sleep(0)


@pytest.fixture
async def make_harness() -> Any:
    made: list[Harness] = []

    async def make(config: EngineConfig | None = None, **kwargs: Any) -> Harness:
        cfg = config or EngineConfig()
        clock = Clock()
        gate = threading.Event()
        gate.set()
        embedder, predictor, vad = FakeEmbedder(), FakePredictor(), FakeVad()
        results: list[tuple[float, EmotionResult]] = []
        norm = NormStats(
            np.zeros(FACE_DIM, np.float32),
            np.ones(FACE_DIM, np.float32),
            np.zeros(AUDIO_DIM, np.float32),
            np.ones(AUDIO_DIM, np.float32),
        )
        engine = Engine(
            cfg,
            predictor=predictor,
            norm=norm,
            make_face_extractor=lambda: FakeFace(gate),
            audio_embedder=embedder,
            bundle=BundleInfo("hb-test", False),
            on_result=lambda r: results.append((clock.t, r)),
            vad=lambda: vad,
            clock=clock,
            wall_clock=lambda: clock.t + 1.7e9,
            **kwargs,
        )
        h = Harness(engine, clock, gate, embedder, predictor, vad, results)
        made.append(h)
        return h

    yield make
    for h in made:
        h.gate.set()
        await h.engine.stop()


def first_after(results: list[tuple[float, EmotionResult]], t0: float, modality: str) -> float:
    return next(t for t, r in results if t > t0 and r.modality == modality)


# -- cadence and profile switches ------------------------------------------------------------------------


async def test_a_result_every_period_while_live(make_harness: Any) -> None:
    h = await make_harness()
    h.add("a")
    await h.run(6.0)
    times = [t for t, _ in h.of("a")]
    steady = [b - a for a, b in itertools.pairwise(times) if a > times[0] + 1.0]
    assert steady, "no results"
    # One result per 0.3 s step, started on the first 20 ms tick at or after its due time.
    assert max(steady) <= 0.3 + TICK + 1e-6
    assert abs(float(np.mean(steady)) - 0.3) < 0.01
    assert {r.modality for _, r in h.of("a")[3:]} == {"both"}
    seqs = [r.seq for _, r in h.of("a")]
    assert seqs == list(range(1, len(seqs) + 1))


async def test_video_that_stops_goes_audio_only_within_staleness_plus_one_period(make_harness: Any) -> None:
    h = await make_harness()
    h.add("a")
    await h.run(2.0)
    assert h.of("a")[-1][1].modality == "both"
    t_stop = h.clock.t
    h.feeds["a"].video = False  # frames stop; nothing is announced
    await h.run(2.0)
    t_switch = first_after(h.of("a"), t_stop, "audio_only")
    assert t_switch - t_stop <= 0.4 + 0.3 + TICK + 1e-6
    assert all(r.modality == "audio_only" for t, r in h.of("a") if t >= t_switch)


async def test_announced_camera_off_acts_at_the_next_step(make_harness: Any) -> None:
    h = await make_harness()
    h.add("a")
    await h.run(2.0)
    t_off = h.clock.t
    h.engine.set_media("a", camera=False)  # frames may still arrive; the announcement wins
    await h.run(1.0)
    after = [(t, r) for t, r in h.of("a") if t > t_off]
    assert after[0][1].modality == "audio_only"
    assert after[0][0] - t_off <= 0.3 + TICK + 1e-6
    assert all(r.modality == "audio_only" for _, r in after)
    assert len(h.engine.participants["a"].features.face_seq) == 0  # buffers cleared at once
    h.engine.set_media("a", camera=True)
    t_on = h.clock.t
    await h.run(1.5)
    assert first_after(h.of("a"), t_on, "both") - t_on <= 0.3 + 0.3 + TICK + 1e-6


async def test_announced_mic_off_gives_video_only_and_both_off_gives_nothing(make_harness: Any) -> None:
    h = await make_harness()
    h.add("a")
    await h.run(2.0)
    t_off = h.clock.t
    h.engine.set_media("a", mic=False)
    await h.run(1.0)
    after = [(t, r) for t, r in h.of("a") if t > t_off]
    assert after and all(r.modality == "video_only" for _, r in after)
    assert after[0][0] - t_off <= 0.3 + TICK + 1e-6
    h.engine.set_media("a", camera=False)
    n = len(h.of("a"))
    await h.run(1.0)
    assert len(h.of("a")) == n


async def test_participants_are_grouped_and_groups_spread_over_the_period(make_harness: Any) -> None:
    h = await make_harness(group_size=3)
    for i in range(10):
        h.add(f"p{i}", Feed(level=0.01))  # nobody speaks
    slots = [h.engine.participants[f"p{i}"].slot for i in range(10)]
    assert slots == [0, 0, 0, 6, 6, 6, 3, 3, 3, 9]  # fill a group, then open the farthest free slot
    phases = {round((st.next_due - h.engine.started_at) / 0.075) % 4 for st in h.engine.participants.values()}
    assert phases == {0, 1, 2, 3}  # four groups, a quarter period apart
    await h.run(3.0)
    # A group's steps start together and share a predictor call.
    assert max(h.predictor.batches) == 3
    face_depths = h.engine.face_pool.stats.batch_sizes
    assert face_depths  # faces ran
    for i in range(10):
        gaps = np.diff([t for t, _ in h.of(f"p{i}")][2:])
        assert gaps.max() <= 0.3 + TICK + 1e-6


async def test_groups_thinned_by_departures_merge(make_harness: Any) -> None:
    h = await make_harness(group_size=4)
    for i in range(8):
        h.add(f"p{i}", Feed(level=0.01))
    assert sorted(Counter(st.slot for st in h.engine.participants.values()).values()) == [4, 4]
    for pid in ("p0", "p1", "p4", "p5"):
        h.engine.remove_participant(pid)
        del h.feeds[pid]
    await h.run(1.0)
    assert len({st.slot for st in h.engine.participants.values()}) == 1  # one group, one predictor call
    for pid in ("p2", "p3", "p6", "p7"):
        gaps = np.diff([t for t, _ in h.of(pid)])
        assert gaps.max() <= 0.3 + TICK + 1e-6  # merging only ever brings a step forward


async def test_speakers_are_regrouped_together_and_share_one_wav2vec2_forward(make_harness: Any) -> None:
    h = await make_harness(group_size=3)
    for i in range(6):
        h.add(f"p{i}", Feed(level=0.01))
    assert h.engine.participants["p0"].slot != h.engine.participants["p5"].slot
    await h.run(1.0)
    assert h.embedder.batches == []  # nobody speaks yet
    h.feeds["p0"].level = h.feeds["p5"].level = 0.3
    t_speak = h.clock.t
    await h.run(2.0)
    a, b = h.engine.participants["p0"], h.engine.participants["p5"]
    assert a.speaker and b.speaker and a.slot == b.slot
    assert all(not h.engine.participants[f"p{i}"].speaker for i in range(1, 5))
    assert h.embedder.batches[-3:] == [2, 2, 2]  # the two speakers' windows go through one forward
    assert a.counters["regrouped"] == 1 and b.counters["regrouped"] == 1
    # Regrouping never stretched the cadence: a result at least every period.
    for pid in ("p0", "p5"):
        times = [t for t, _ in h.of(pid) if t > t_speak - 0.5]
        assert np.diff(times).max() <= 0.3 + TICK + 1e-6
    # They stop speaking: after the hold they return to silent groups.
    h.feeds["p0"].level = h.feeds["p5"].level = 0.01
    await h.run(3.5)
    assert not a.speaker and not b.speaker and a.counters["regrouped"] == 2


async def test_leaving_frees_the_state_and_late_work_is_discarded(make_harness: Any) -> None:
    h = await make_harness(face_wait_s=0.0)
    h.add("a")
    h.add("b")
    await h.run(1.0)
    h.gate.clear()  # a face job of "a" is stuck in the pool
    await h.run(0.4, wait_faces=False)
    n_b = len(h.of("b"))
    h.engine.remove_participant("a")
    del h.feeds["a"]
    h.gate.set()
    await h.run(1.0)
    assert "a" not in h.engine.participants
    assert all(t <= h.clock.t - 1.0 for t, _ in h.of("a"))
    assert len(h.of("b")) > n_b


# -- voice activity gating ---------------------------------------------------------------------------------


async def test_vad_gates_silent_windows_and_their_audio_goes_stale(make_harness: Any) -> None:
    h = await make_harness()
    h.add("speaker", Feed(level=0.3))
    h.add("quiet", Feed(level=0.01))  # a live mic with room noise: the VAD says no speech
    h.add("zeros", Feed(level=0.0))  # digital silence: skipped before the VAD
    await h.run(3.0)
    st = {pid: h.engine.participants[pid] for pid in ("speaker", "quiet", "zeros")}
    assert st["speaker"].counters.get("audio_embedded", 0) >= 8
    assert st["speaker"].counters.get("vad_gated", 0) == 0
    assert st["quiet"].counters.get("vad_gated", 0) >= 8
    assert st["quiet"].counters.get("audio_embedded", 0) == 0
    assert st["zeros"].counters.get("audio_silent", 0) >= 8
    assert st["zeros"].counters.get("vad_gated", 0) == 0
    # Only the speaker's windows reached Wav2Vec2.
    assert h.embedder.levels and min(h.embedder.levels) > 0.05
    assert h.engine.counters["vad_gated"] == st["quiet"].counters["vad_gated"]
    for pid in ("quiet", "zeros"):
        assert {r.modality for _, r in h.of(pid)} == {"video_only"}
    assert h.of("speaker")[-1][1].modality == "both"
    # The speaker stops talking: its audio modality goes stale like a dropped stream would.
    h.feeds["speaker"].level = 0.01
    t_quiet = h.clock.t
    await h.run(2.0)
    t_switch = first_after(h.of("speaker"), t_quiet, "video_only")
    # The 0.6 s window still holds speech for 0.6 s; the last embedding then counts for 0.4 s + one
    # period (bot.pipeline.freshness.audio_max_age), and the switch shows at the next step (one more period).
    assert t_switch - t_quiet <= 0.6 + (0.4 + 0.3) + 0.3 + TICK + 1e-6
    stats = h.engine.participant_stats(st["quiet"])
    assert stats["vadGated"] == st["quiet"].counters["vad_gated"]


async def test_vad_off_embeds_every_non_silent_window(make_harness: Any) -> None:
    h = await make_harness(EngineConfig(vad=False))
    h.add("quiet", Feed(level=0.01))
    await h.run(2.0)
    assert h.vad.windows == 0
    assert h.engine.participants["quiet"].counters.get("audio_embedded", 0) >= 5
    assert h.of("quiet")[-1][1].modality == "both"


# -- batching ----------------------------------------------------------------------------------------------


async def test_steps_ready_together_share_one_predictor_call(make_harness: Any) -> None:
    h = await make_harness()
    for i in range(10):
        h.add(f"p{i}", Feed(audio=False), mic=False)
    # Default groups of eight: 8 + 2.
    assert sorted(Counter(st.slot for st in h.engine.participants.values()).values()) == [2, 8]
    await h.run(2.0)
    # Eight steps that each wait for their own face still reach the predictor as one call.
    assert h.predictor.batches[-4:] in ([8, 2, 8, 2], [2, 8, 2, 8])
    sizes = h.engine.inference_pool.stats.batch_sizes
    assert sizes.get(8, 0) >= 3


async def test_a_group_takes_turns_at_the_front_of_its_face_burst(make_harness: Any) -> None:
    # The face thread takes each frame when it starts the job and a group's results leave
    # together, so the first face of a burst is the oldest: the front must not be one member's.
    h = await make_harness()
    for i in range(8):
        h.add(f"p{i}", Feed(audio=False), mic=False)
    assert len({st.slot for st in h.engine.participants.values()}) == 1
    submitted: list[tuple[int, str]] = []
    submit = h.engine.face_pool.submit

    def record(job: Any) -> Any:
        submitted.append((h.ticks, job.participant_id))
        return submit(job)

    h.engine.face_pool.submit = record  # type: ignore[method-assign]
    await h.run(4.0)
    bursts = [[pid for t, pid in submitted if t == tick] for tick in sorted({t for t, _ in submitted})]
    bursts = [b for b in bursts if len(b) == 8]
    assert len(bursts) >= 10
    positions = {f"p{i}": [b.index(f"p{i}") for b in bursts] for i in range(8)}
    for pid, pos in positions.items():
        assert 2.5 <= float(np.mean(pos)) <= 4.5, (pid, pos)
    # The order turns by one place a step: every member passes through every place.
    assert all(sorted(set(pos)) == list(range(8)) for pos in positions.values()), positions


# -- self-throttling ---------------------------------------------------------------------------------------


async def test_slow_face_stage_throttles_sampling_then_recovers_step_by_step(make_harness: Any) -> None:
    cfg = EngineConfig()
    h = await make_harness(cfg, face_wait_s=0.0)
    # The limit is one group's burst: more than a group's worth of faces still queued is a backlog.
    assert h.engine.face_queue_limit == h.engine.throttle.queue_limit == h.engine.group_size == 8
    n = 12
    for i in range(n):
        h.add(f"p{i}", Feed(audio=False), mic=False)
    t = h.engine.throttle
    await h.run(1.0)
    assert t.fps == pytest.approx(1 / cfg.result_interval_s) and t.decreases == 0
    depths: list[int] = []
    h.gate.clear()  # the face stage stops keeping up
    await h.run(2.0, wait_faces=False, on_tick=lambda: depths.append(h.engine.face_pool.depth))
    assert max(depths) > h.engine.face_queue_limit
    assert t.decreases >= 2 and t.fps == cfg.min_fps  # multiplicative decrease to the floor
    assert all(e.fps >= cfg.min_fps for e in t.events)
    decreases = [e for e in t.events if e.kind == "decrease"]
    assert all(
        b.fps == pytest.approx(max(cfg.min_fps, a.fps * cfg.throttle_decrease))
        for a, b in itertools.pairwise(decreases)
    )
    # Per participant at most one face in flight: the pool holds at most n jobs, never more.
    assert max(depths) <= n <= h.engine.face_pool.max_pending
    busy = sum(st.counters.get("face_busy", 0) for st in h.engine.participants.values())
    assert busy > 0
    h.gate.set()  # the stage catches up
    await h.run(8.0)
    recoveries = [e for e in t.events if e.kind == "recover"]
    assert t.fps == pytest.approx(t.target_fps)
    assert len(recoveries) >= 4  # 1.0 -> 1.5 -> 2.0 -> 2.5 -> 3.0 -> 3.33: one step at a time
    steps = np.diff([cfg.min_fps] + [e.fps for e in recoveries])
    assert np.all(steps <= cfg.throttle_recover_step + 1e-9) and np.all(steps > 0)
    gaps = np.diff([e.time for e in recoveries])
    assert np.all(gaps >= cfg.throttle_recover_after_s - 1e-9)
    # Throttling lowers what the bot samples; it never talks to clients: only results went out.
    assert all(isinstance(r, EmotionResult) for _, r in h.results)
    assert h.of("p0")[-1][0] >= h.clock.t - 0.3 - TICK


async def test_more_work_than_the_face_queue_holds_is_dropped_and_counted(make_harness: Any) -> None:
    h = await make_harness(face_wait_s=0.0)
    n = h.engine.face_pool.max_pending + 8  # more participants than the face queue may hold
    for i in range(n):
        h.add(f"p{i}", Feed(audio=False), mic=False)
    await h.run(0.6)
    h.gate.clear()
    pending: list[int] = []
    await h.run(1.0, wait_faces=False, on_tick=lambda: pending.append(h.engine.face_pool.pending))
    pool = h.engine.face_pool
    assert max(pending) <= pool.max_pending
    per_participant = sum(st.counters.get("face_dropped", 0) for st in h.engine.participants.values())
    assert per_participant > 0
    assert per_participant == h.engine.counters["face_dropped"] == pool.stats.rejected
    h.gate.set()


async def test_memory_stays_bounded_over_a_long_run(make_harness: Any) -> None:
    h = await make_harness()
    h.add("a", Feed(level=0.3))
    h.add("b", Feed(level=0.01))
    await h.run(10.0)
    tracemalloc.start()
    try:
        await h.run(5.0)
        before, _ = tracemalloc.get_traced_memory()
        keys_before = {pid: set(st.counters) for pid, st in h.engine.participants.items()}
        await h.run(20.0)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 20 s more of two participants must not accumulate state (results list of this test aside).
    growth = after - before - 66 * 2 * 2000  # the harness keeps every result (~2 KB each)
    assert growth < 1_000_000, growth
    for pid, st in h.engine.participants.items():
        assert len(st.features.face_seq) <= SEQ_LEN and len(st.features.audio_seq) <= SEQ_LEN
        assert len(st.latencies_ms) <= 500 and len(st.result_times) <= 64 and len(st.sample_times) <= 64
        assert set(st.counters) == keys_before[pid]
        assert len(st.audio_ring) <= st.audio_ring.capacity
    assert len(h.engine.throttle.events) <= 256
    assert h.engine.face_pool.depth == h.engine.audio_pool.depth == h.engine.inference_pool.depth == 0


async def test_snapshot_reports_per_participant_detail(make_harness: Any) -> None:
    h = await make_harness()
    h.add("a")
    await h.run(3.0)
    snap = h.engine.snapshot()
    (p,) = snap["participants"]
    assert p["profile"] == "both"
    assert p["resultsPerSecond"] == pytest.approx(1 / 0.3, rel=0.1)
    assert p["sampledFps"] == pytest.approx(1 / 0.3, rel=0.1)
    assert set(p["queues"]) == {"face", "audio", "inference"}
    assert {"p50", "p95", "max", "n"} <= set(p["latencyMs"])
    assert snap["pools"]["inference"]["batchSizes"]
    assert snap["throttle"]["ceilingFps"] == pytest.approx(1 / 0.3, rel=1e-3)
    assert snap["vad"] == {"enabled": True, "threshold": 0.5}


def test_a_face_job_analyses_the_newest_frame_when_it_starts() -> None:
    """Queued face jobs take their frame from the participant's box when a thread starts them."""
    from bot.pipeline.slots import FrameBox
    from bot.pipeline.stages import FaceJob, face_stage

    gate = threading.Event()
    gate.set()
    init, _, process = face_stage(lambda: FakeFace(gate))
    box = FrameBox()
    box.put((np.full((4, 4, 3), 10, np.uint8), 1.0, 101.0))
    box.put((np.full((4, 4, 3), 200, np.uint8), 2.0, 102.0))  # arrived while the job was queued
    (out,) = process(init(), [FaceJob("a", None, 0.0, 0.0, source=box.take)])
    assert (out.media_time, out.wall_time) == (2.0, 102.0)
    assert out.vector is not None and out.vector[0] == pytest.approx(200 / 255)
    assert box.peek() is None
    (empty,) = process(init(), [FaceJob("a", None, 0.0, 0.0, source=box.take)])
    assert empty.vector is None and empty.reason == "no_frame"
    # A job with its frame given (replay) analyses that frame.
    (given,) = process(init(), [FaceJob("a", np.zeros((4, 4, 3), np.uint8), 5.0, 105.0)])
    assert given.vector is not None and given.media_time == 5.0


# -- batched inference equals single calls (golden artefacts) ----------------------------------------------


def test_a_batched_inference_step_equals_single_calls(golden_dir: Path, tmp_path: Path) -> None:
    bundle = load_bundle(import_hoovik(golden_dir / "artifacts", tmp_path / "golden"))
    process = inference_stage(Predictor(bundle, torch_threads=1))
    rng = np.random.default_rng(1)
    jobs = []
    for i, (face, audio) in enumerate([(1, 1), (1, 0), (0, 1), (1, 1), (1, 1)]):
        fm = np.zeros(SEQ_LEN, np.float32)
        am = np.zeros(SEQ_LEN, np.float32)
        fm[i % 4 :] = face
        am[: SEQ_LEN - i] = audio
        xf = rng.standard_normal((SEQ_LEN, FACE_DIM)).astype(np.float32) * fm[:, None]
        xa = rng.standard_normal((SEQ_LEN, AUDIO_DIM)).astype(np.float32) * am[:, None]
        jobs.append(InferenceJob(f"p{i}", xf, xa, fm, am))
    batched = process(None, jobs)
    single = [process(None, [job])[0] for job in jobs]
    for b, s in zip(batched, single, strict=True):
        assert b.status == s.status == "ok"
        assert b.profile == s.profile and b.label == s.label
        np.testing.assert_allclose(b.probs, s.probs, rtol=0, atol=1e-5)
        assert b.anomaly is not None and s.anomaly is not None
        assert b.anomaly.detector == s.anomaly.detector and b.anomaly.is_anomaly == s.anomaly.is_anomaly
        assert b.anomaly.score == pytest.approx(s.anomaly.score, abs=1e-5)


async def test_an_explicit_face_queue_limit_is_kept(make_harness: Any) -> None:
    h = await make_harness(EngineConfig(face_queue_limit=3))
    assert h.engine.face_queue_limit == h.engine.throttle.queue_limit == 3
    assert h.engine.face_pool.max_pending == 2 * h.engine.group_size
    with pytest.raises(ValueError, match="face_queue_limit must be >= 0"):
        await make_harness(EngineConfig(face_queue_limit=-1))
