"""The per-participant real-time engine: sampling, feature pools, freshness, batched inference.

Thread map (see docs/engine.md):
- asyncio loop: receives frame references, runs the scheduler tick, moves results out;
- face pool (2 threads): RGB conversion + MediaPipe, one landmarker per thread;
- audio pool (2 threads): Wav2Vec2 over 0.6 s windows, batched across participants;
- inference pool (1 thread): one batched predictor call for every participant that is due.

Time is explicit: every input carries its media time (from the frame's pts) and the engine reads
wall time from one injectable clock, so replay and tests can drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bot.config import EngineConfig
from bot.pools import BatchWorkerPool, PoolClosed, PoolFull
from bot.profiles import audio_live, face_live, profile_of, stream_fresh
from bot.results import EmotionResult
from bot.slots import AudioRing, LatestSlot
from bot.stages import (
    AudioJob,
    AudioOutput,
    FaceJob,
    FaceOutput,
    InferenceJob,
    audio_stage,
    face_stage,
    inference_stage,
)
from bot.throttle import SamplingThrottle
from models.constants import AUDIO_DIM, AUDIO_WINDOW_SAMPLES, FACE_DIM, NEUTRAL_LABEL, SAMPLE_RATE
from models.sequence import NormStats, RollingSequence, assemble_inputs
from models.smoothing import EmaSmoother

log = logging.getLogger(__name__)

# Live windows shorter than this are not embedded (the original required >= 1200 samples live and
# >= 2400 offline; we use the offline rule so serving matches training).
MIN_LIVE_SAMPLES = 2400


@dataclass
class BundleInfo:
    bundle_id: str
    trained: bool


@dataclass
class ParticipantState:
    """Everything the engine holds for one remote participant; dropped whole on leave."""

    pid: str
    name: str
    role: str
    mic_on: bool
    camera_on: bool
    analysed: bool
    face_seq: RollingSequence
    audio_seq: RollingSequence
    audio_ring: AudioRing
    smoother: EmaSmoother
    video_slot: LatestSlot[tuple[Any, float, float]] = field(default_factory=LatestSlot)
    video_last_wall: float | None = None
    audio_last_wall: float | None = None
    face_last_wall: float | None = None
    face_last_media: float = 0.0
    face_last_captured: float = 0.0
    audio_emb_last_wall: float | None = None
    audio_emb_media: float = 0.0
    audio_emb_captured: float = 0.0
    speech_last_wall: float | None = None
    next_sample: float = 0.0
    next_due: float = 0.0
    step_running: bool = False
    seq: int = 0
    profile: str | None = None
    profiles_seen: set[str] = field(default_factory=set)
    face_in_flight: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=500))
    result_times: deque[float] = field(default_factory=lambda: deque(maxlen=64))

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n


ResultSink = Callable[[EmotionResult], None]


class Engine:
    """Turns per-participant media into results at a steady cadence, on bounded pools."""

    def __init__(
        self,
        config: EngineConfig,
        *,
        predictor: Any,
        norm: NormStats,
        make_face_extractor: Callable[[], Any],
        audio_embedder: Any,
        bundle: BundleInfo,
        on_result: ResultSink,
        vad: Any | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.norm = norm
        self.bundle = bundle
        self.on_result = on_result
        self.vad = vad
        self.clock = clock
        self.wall_clock = wall_clock
        self.participants: dict[str, ParticipantState] = {}
        self.throttle = SamplingThrottle(
            config.target_fps,
            config.min_fps,
            config.face_queue_limit,
            decrease=config.throttle_decrease,
            recover_step=config.throttle_recover_step,
            recover_after_s=config.throttle_recover_after_s,
        )
        f_init, f_teardown, f_process = face_stage(make_face_extractor)
        self.face_pool: BatchWorkerPool[FaceJob, FaceOutput] = BatchWorkerPool(
            "face",
            f_process,
            threads=config.face_threads,
            max_batch=1,
            max_pending=max(8, 4 * config.face_queue_limit),
            init=f_init,
            teardown=f_teardown,
        )
        self.audio_pool: BatchWorkerPool[AudioJob, AudioOutput] = BatchWorkerPool(
            "audio",
            audio_stage(audio_embedder),
            threads=config.audio_threads,
            max_batch=config.audio_max_batch,
            max_pending=64,
        )
        self.inference_pool: BatchWorkerPool[InferenceJob, Any] = BatchWorkerPool(
            "inference",
            inference_stage(predictor),
            threads=config.inference_threads,
            max_batch=config.inference_max_batch,
            max_pending=128,
        )
        self.counters: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._steps: set[asyncio.Task[None]] = set()
        self.started_at = clock()

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="engine-tick")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for t in list(self._steps):
            t.cancel()
        if self._steps:
            await asyncio.gather(*self._steps, return_exceptions=True)
        for pool in (self.face_pool, self.audio_pool, self.inference_pool):
            await asyncio.to_thread(pool.close)

    # -- participants ----------------------------------------------------------------------------

    def add_participant(
        self, pid: str, name: str = "", role: str = "participant", mic: bool = True, camera: bool = True
    ) -> ParticipantState:
        st = self.participants.get(pid)
        if st is not None:
            st.name, st.role = name or st.name, role
            return st
        cfg = self.config
        st = ParticipantState(
            pid=pid,
            name=name,
            role=role,
            mic_on=mic,
            camera_on=camera,
            analysed=True,
            face_seq=RollingSequence(FACE_DIM, cfg.seq_len),
            audio_seq=RollingSequence(AUDIO_DIM, cfg.seq_len),
            audio_ring=AudioRing(int(cfg.audio_buffer_s * SAMPLE_RATE)),
            smoother=EmaSmoother(
                alpha=cfg.ema_alpha,
                confidence_threshold=cfg.confidence_threshold,
                ttl=cfg.ema_ttl_s,
                reset=cfg.ema_reset,
            ),
        )
        now = self.clock()
        st.next_due = now + cfg.result_interval_s
        self.participants[pid] = st
        return st

    def remove_participant(self, pid: str) -> None:
        """Free everything held for ``pid``; in-flight work for it is discarded when it returns."""
        self.participants.pop(pid, None)

    def set_media(self, pid: str, mic: bool | None = None, camera: bool | None = None) -> None:
        """Announced mic/camera state acts at once; turning a modality off clears its buffers."""
        st = self.participants.get(pid)
        if st is None:
            return
        if mic is not None and mic != st.mic_on:
            st.mic_on = mic
            if not mic:
                st.audio_seq.clear()
                st.audio_ring.clear()
                st.audio_emb_last_wall = None
        if camera is not None and camera != st.camera_on:
            st.camera_on = camera
            if not camera:
                st.face_seq.clear()
                st.video_slot.clear()
                st.face_last_wall = None

    def set_analysis(self, pid: str, enabled: bool) -> None:
        """Opt-out: stop analysing and delete buffered features at once."""
        st = self.participants.get(pid)
        if st is None:
            return
        st.analysed = enabled
        if not enabled:
            st.face_seq.clear()
            st.audio_seq.clear()
            st.audio_ring.clear()
            st.video_slot.clear()

    # -- media input (called on the loop by the track readers; must stay cheap) ------------------

    def on_video_frame(self, pid: str, frame: Any, media_time: float) -> None:
        st = self.participants.get(pid)
        if st is None:
            return
        now = self.clock()
        st.video_last_wall = now
        if not (st.analysed and st.camera_on):
            return
        if st.video_slot.peek() is not None:
            st.count("frames_skipped")
        st.video_slot.put((frame, media_time, self.wall_clock()))

    def on_audio(self, pid: str, samples: np.ndarray, media_time: float) -> None:
        st = self.participants.get(pid)
        if st is None:
            return
        st.audio_last_wall = self.clock()
        if not (st.analysed and st.mic_on):
            return
        st.audio_ring.append(samples, media_time, self.wall_clock())

    # -- scheduling ------------------------------------------------------------------------------

    async def _run(self) -> None:
        tick = min(0.02, self.config.result_interval_s / 5)
        while True:
            try:
                self.tick()
            except Exception:
                log.exception("engine tick failed")
            await asyncio.sleep(tick)

    def tick(self) -> None:
        now = self.clock()
        fps = self.throttle.observe(self.face_pool.depth, now)
        for st in list(self.participants.values()):
            if st.analysed:
                self._sample_face(st, now, fps)
                if now >= st.next_due and not st.step_running:
                    due = st.next_due
                    # Keep the cadence anchored to the schedule, not to completion times.
                    st.next_due = max(due + self.config.result_interval_s, now)
                    st.step_running = True
                    task = asyncio.create_task(self._step(st))
                    self._steps.add(task)
                    task.add_done_callback(self._steps.discard)
                elif now >= st.next_due:
                    st.count("steps_late")

    def _sample_face(self, st: ParticipantState, now: float, fps: float) -> None:
        if not st.camera_on or st.video_slot.peek() is None or now < st.next_sample:
            return
        item = st.video_slot.take()
        if item is None:
            return
        frame, media_time, wall = item
        period = 1.0 / fps
        st.next_sample = max(st.next_sample + period, now + period * 0.5)
        job = FaceJob(st.pid, frame, media_time, wall)
        try:
            fut = self.face_pool.submit(job)
        except (PoolFull, PoolClosed):
            st.count("face_dropped")
            self._count("face_dropped")
            return
        st.face_in_flight += 1
        fut.add_done_callback(lambda f: self._face_done(st, job, f))

    def _face_done(self, st: ParticipantState, job: FaceJob, fut: asyncio.Future[FaceOutput]) -> None:
        st.face_in_flight -= 1
        if self.participants.get(st.pid) is not st or fut.cancelled():
            return
        if fut.exception() is not None:
            st.count("face_errors")
            return
        out = fut.result()
        if out.vector is None:
            st.count(f"face_{out.reason or 'none'}")
            return
        if not (st.camera_on and st.analysed):
            return
        st.face_seq.append(out.vector, job.media_time)
        st.face_last_wall = self.clock()
        st.face_last_media = job.media_time
        st.face_last_captured = job.wall_time
        st.count("faces")

    # -- freshness -------------------------------------------------------------------------------

    def _face_active(self, st: ParticipantState, now: float) -> bool:
        return face_live(
            st.camera_on,
            st.video_last_wall,
            st.face_last_wall,
            len(st.face_seq),
            now,
            self.config.modality_stale_s,
            self.throttle.fps,
        )

    def _audio_stream_live(self, st: ParticipantState, now: float) -> bool:
        return stream_fresh(st.mic_on, st.audio_last_wall, now, self.config.modality_stale_s)

    def _audio_active(self, st: ParticipantState, now: float) -> bool:
        return audio_live(
            st.mic_on,
            st.audio_last_wall,
            st.audio_emb_last_wall,
            len(st.audio_seq),
            now,
            self.config.modality_stale_s,
            self.config.result_interval_s,
        )

    # -- one step: audio embedding (if live) then batched inference ------------------------------

    async def _step(self, st: ParticipantState) -> None:
        try:
            await self._step_inner(st)
        except asyncio.CancelledError:
            raise
        except Exception:
            st.count("step_errors")
            log.exception("step for %s failed", st.pid)
        finally:
            st.step_running = False

    async def _embed_audio(self, st: ParticipantState, now: float) -> None:
        if not self._audio_stream_live(st, now) or len(st.audio_ring) < MIN_LIVE_SAMPLES:
            return
        window = st.audio_ring.window(AUDIO_WINDOW_SAMPLES)
        if float(np.std(window.samples)) < 1e-6:
            st.count("audio_silent")
            return
        try:
            out = await self.audio_pool.submit(
                AudioJob(st.pid, window.samples, window.end_media_time, window.end_wall_time)
            )
        except (PoolFull, PoolClosed):
            st.count("audio_dropped")
            self._count("audio_dropped")
            return
        if self.participants.get(st.pid) is not st or out.vector is None or not st.mic_on:
            return
        st.audio_seq.append(out.vector, window.end_media_time)
        st.audio_emb_last_wall = self.clock()
        st.audio_emb_media = window.end_media_time
        st.audio_emb_captured = window.end_wall_time

    async def _step_inner(self, st: ParticipantState) -> None:
        await self._embed_audio(st, self.clock())
        if self.participants.get(st.pid) is not st or not st.analysed:
            return
        now = self.clock()
        face_active = self._face_active(st, now)
        audio_active = self._audio_active(st, now)
        if not (face_active or audio_active):
            st.profile = None
            return
        xf, xa, fm, am = assemble_inputs(st.face_seq, st.audio_seq, face_active, audio_active, self.norm)
        try:
            pred = await self.inference_pool.submit(InferenceJob(st.pid, xf, xa, fm, am))
        except (PoolFull, PoolClosed):
            st.count("inference_dropped")
            self._count("inference_dropped")
            return
        if self.participants.get(st.pid) is not st or not st.analysed:
            return
        self._emit(st, pred, face_active, audio_active)

    def _emit(self, st: ParticipantState, pred: Any, face_active: bool, audio_active: bool) -> None:
        now = self.clock()
        wall = self.wall_clock()
        media_times: list[float] = []
        captured: list[float] = []
        if face_active:
            media_times.append(st.face_last_media)
            captured.append(st.face_last_captured)
        if audio_active:
            media_times.append(st.audio_emb_media)
            captured.append(st.audio_emb_captured)
        newest_captured = max(captured) if captured else wall
        profile = profile_of(face_active, audio_active) or "both"
        ok = pred.status == "ok" and pred.probs is not None
        # The original smooths the 4-dp probabilities it emits; so do we (golden EMA parity).
        smoothed = st.smoother.update([round(float(p), 4) for p in pred.probs] if ok else None, now)
        st.seq += 1
        latency_ms = max(0.0, (wall - newest_captured) * 1000.0)
        result = EmotionResult(
            participant_id=st.pid,
            seq=st.seq,
            emotion=smoothed.label if ok else NEUTRAL_LABEL,
            confidence=smoothed.score if ok else 0.0,
            probs=tuple(float(p) for p in pred.probs) if ok else None,
            modality=profile,
            anomaly=bool(pred.anomaly.is_anomaly) if ok and pred.anomaly is not None else None,
            anomaly_score=float(pred.anomaly.score) if ok and pred.anomaly is not None else None,
            latency_ms=latency_ms,
            ts_ms=int(wall * 1000),
            media_time=max(media_times) if media_times else None,
            captured_at_ms=int(newest_captured * 1000),
            bundle_id=self.bundle.bundle_id,
            trained=self.bundle.trained,
            error=None if ok else (pred.error or "prediction failed"),
        )
        st.profile = profile
        st.profiles_seen.add(profile)
        st.latencies_ms.append(latency_ms)
        st.result_times.append(now)
        st.count("results")
        self._count("results")
        try:
            self.on_result(result)
        except Exception:
            log.exception("result sink failed for %s", st.pid)

    def _count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

    # -- introspection ---------------------------------------------------------------------------

    def participant_stats(self, st: ParticipantState) -> dict[str, Any]:
        now = self.clock()
        recent = [t for t in st.result_times if now - t <= 5.0]
        span = min(5.0, max(now - (recent[0] if recent else now), 1e-9))
        lat = np.asarray(st.latencies_ms, dtype=np.float64)
        return {
            "participantId": st.pid,
            "name": st.name,
            "role": st.role,
            "profile": st.profile,
            "mic": st.mic_on,
            "camera": st.camera_on,
            "analysed": st.analysed,
            "samplingFps": round(self.throttle.fps, 3),
            "faceInFlight": st.face_in_flight,
            "faceSeq": len(st.face_seq),
            "audioSeq": len(st.audio_seq),
            "resultsPerSecond": round((len(recent) - 1) / span, 3) if len(recent) > 1 else 0.0,
            "latencyMs": _percentiles(lat),
            "counters": dict(st.counters),
        }

    def snapshot(self) -> dict[str, Any]:
        return {
            "participants": [self.participant_stats(st) for st in self.participants.values()],
            "queues": {
                "face": self.face_pool.depth,
                "audio": self.audio_pool.depth,
                "inference": self.inference_pool.depth,
            },
            "samplingFps": self.throttle.fps,
            "throttle": {"decreases": self.throttle.decreases, "recoveries": self.throttle.recoveries},
            "counters": dict(self.counters),
        }


def _percentiles(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    return {
        "n": int(values.size),
        "p50": round(float(np.percentile(values, 50)), 1),
        "p95": round(float(np.percentile(values, 95)), 1),
        "max": round(float(values.max()), 1),
    }
