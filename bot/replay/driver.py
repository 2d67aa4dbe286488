"""The replay driver: recordings through the live engine's pools, rules and post-processing.

Per file, three coroutines form a pipeline on the event loop, fed by one decode thread:

* **decode thread** (one per file): :class:`~bot.replay.decode.MediaReader` decodes and resamples,
  and hands batches of arrival-ordered events to the loop (bounded, so it never runs far ahead);
* **planner** (loop): the :class:`~bot.replay.timeline.Timeline` plans the steps; the frame a step
  samples goes to the face pool at once, the audio windows go to the audio pool in chunks;
* **sequencer** (loop): in step order, takes the face vectors and audio embeddings as the live
  engine would have received them, applies the freshness rules of :mod:`bot.profiles`, assembles
  the predictor inputs (:func:`models.sequence.assemble_inputs`) and sends chunks to inference;
* **emitter** (loop): EMA smoothing (:class:`models.smoothing.EmaSmoother`) and the result message,
  exactly as ``Engine._emit`` builds it, with the media clock in place of the wall clock.

The compute runs on the same stages and pool class as the live engine (``bot/stages.py``,
:class:`bot.pools.BatchWorkerPool`): face (2 threads, one MediaPipe landmarker each), audio
(2 threads, each with its own VAD) and inference (1 thread, which owns the predictor).

**Batching and determinism.** Unlike live, replay is not waiting for the wall clock, so it batches
across time: the audio windows of steps ``[8j, 8j+8)`` of a file are one Wav2Vec2 call, and the
predictor inputs of steps ``[16j, 16j+16)`` one predictor call. Batched and single forwards differ
in the last bits (~1e-7), so chunks are cut by *step index*, never by what happens to be pending:
the same file gives the same batches, hence byte-identical output, whatever else runs alongside.
Files never share a batch, so a file's results do not depend on which other files are replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bot.config import EngineConfig
from bot.engine import BundleInfo
from bot.pools import BatchWorkerPool
from bot.profiles import audio_live, face_live, profile_of
from bot.replay.decode import Event, MediaError, MediaInfo, MediaReader, probe
from bot.replay.inputs import ReplayInput
from bot.replay.timeline import FaceSample, StepPlan, Timeline, sampling_fps
from bot.results import EmotionResult
from bot.stages import (
    AudioJob,
    AudioOutput,
    FaceJob,
    FaceOutput,
    InferenceJob,
    audio_stage,
    audio_stage_init,
    face_stage,
    inference_stage,
)
from models.constants import AUDIO_MIN_SAMPLES, NEUTRAL_LABEL
from models.extractors import REFERENCE_AUDIO, REFERENCE_FACE
from models.family import FeaturePlan
from models.sequence import NormStats, RollingSequence, assemble_inputs
from models.smoothing import EmaSmoother

log = logging.getLogger(__name__)

# Pipeline bounds (per file unless noted). STEPS_AHEAD must exceed one audio chunk plus one
# inference chunk, or the planner could wait for an emitter that waits for the planner.
STEPS_AHEAD_MIN = 48
FACE_IN_FLIGHT = 8  # per replayer: frames queued or running in the face pool
AUDIO_IN_FLIGHT = 4  # per replayer: audio chunks queued or running
INFERENCE_IN_FLIGHT = 4  # per replayer
DECODE_BATCH = 8  # events per hand-off from a decode thread
DECODE_BATCHES_AHEAD = 4


@dataclass(frozen=True)
class ReplayModels:
    """The models a replay runs: the same objects the live bot loads (see ``bot.runtime``)."""

    predictor: Any
    norm: NormStats | None
    audio: Any
    make_face_extractor: Callable[[], Any]
    bundle: BundleInfo
    description: dict[str, Any] = field(default_factory=dict)
    # None: Silero VAD at engine.vad_threshold, as the live engine (tests may inject a fake).
    make_speech_detector: Callable[[], Any] | None = None
    # What the bundle declares (dims, audio window, per-participant normaliser); None: the
    # reference family with ``norm``.
    features: FeaturePlan | None = None

    @property
    def plan(self) -> FeaturePlan:
        if self.features is not None:
            return self.features
        if self.norm is None:
            raise ValueError("replay models need a feature plan or the reference norm stats")
        fixed = self.norm
        return FeaturePlan(REFERENCE_FACE, REFERENCE_AUDIO, AUDIO_MIN_SAMPLES, lambda: fixed)

    @classmethod
    def from_runtime(cls, runtime: Any) -> ReplayModels:
        return cls(
            runtime.predictor,
            None,
            runtime.audio,
            runtime.make_face_extractor,
            runtime.info,
            runtime.describe(),
            features=runtime.features,
        )


@dataclass(frozen=True)
class StepRecord:
    """One step of one participant: its media time, the profile (None = no result) and any error."""

    time: float
    profile: str | None
    result: EmotionResult | None
    error: str | None = None


@dataclass
class ParticipantReplay:
    """Everything replay learned about one file. ``status``: ok, partial (an error after some
    results) or error (nothing usable)."""

    input: ReplayInput
    info: MediaInfo | None = None
    origin: float = 0.0
    end_s: float = 0.0
    steps: list[StepRecord] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    @property
    def participant_id(self) -> str:
        return self.input.participant_id

    @property
    def results(self) -> list[EmotionResult]:
        return [s.result for s in self.steps if s.result is not None]

    @property
    def status(self) -> str:
        if self.error is None:
            return "ok"
        return "partial" if self.results else "error"

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n


@dataclass
class _AudioChunk:
    """The audio windows of one run of consecutive steps; one Wav2Vec2 call."""

    future: asyncio.Future[list[AudioOutput]]
    windows: list[np.ndarray] = field(default_factory=list)


@dataclass(frozen=True)
class _PlannedStep:
    plan: StepPlan
    face: asyncio.Future[FaceOutput] | None
    chunk: _AudioChunk | None
    row: int


@dataclass
class _Outcome:
    """A sequenced step waiting for its prediction."""

    time: float
    job: InferenceJob | None
    face_active: bool = False
    audio_active: bool = False
    used: tuple[tuple[float, float], ...] = ()


_END = object()


class Replayer:
    """Replays files through shared pools; use as ``async with Replayer(...) as r: await r.run(...)``.

    ``on_result`` sees each result as it is emitted; ``progress`` receives media seconds done.
    With ``realtime`` every result is held back until its media time on a wall clock started when
    the run starts, so a recording plays out as if it were live (output is identical either way).
    """

    def __init__(
        self,
        config: EngineConfig,
        models: ReplayModels,
        *,
        jobs: int = 2,
        realtime: bool = False,
        on_result: Callable[[EmotionResult], None] | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> None:
        if jobs < 1:
            raise ValueError("jobs must be >= 1")
        self.config = config
        self.models = models
        self.jobs = jobs
        self.realtime = realtime
        self.on_result = on_result
        self.progress = progress
        self.audio_batch = max(1, config.audio_max_batch)
        self.inference_batch = max(1, config.inference_max_batch)
        self.steps_ahead = max(STEPS_AHEAD_MIN, 2 * (self.audio_batch + self.inference_batch))
        self._face_pool: BatchWorkerPool[FaceJob, FaceOutput] | None = None
        self._audio_pool: BatchWorkerPool[tuple[AudioJob, ...], list[AudioOutput]] | None = None
        self._inference_pool: BatchWorkerPool[tuple[InferenceJob, ...], list[Any]] | None = None
        self._face_slots = asyncio.Semaphore(FACE_IN_FLIGHT)
        self._audio_slots = asyncio.Semaphore(AUDIO_IN_FLIGHT)
        self._inference_slots = asyncio.Semaphore(INFERENCE_IN_FLIGHT)
        self._wall_start = 0.0
        self._session_start = 0.0

    async def __aenter__(self) -> Replayer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start the pools off the loop (each face thread builds its MediaPipe graph, ~100 ms)."""
        cfg = self.config
        f_init, f_teardown, f_process = face_stage(self.models.make_face_extractor)
        audio_process = audio_stage(self.models.audio)
        inference_process = inference_stage(self.models.predictor)

        def audio_chunks(state: Any, chunks: Sequence[tuple[AudioJob, ...]]) -> list[list[AudioOutput]]:
            return [audio_process(state, chunk) for chunk in chunks]

        def inference_chunks(state: Any, chunks: Sequence[tuple[InferenceJob, ...]]) -> list[list[Any]]:
            return [inference_process(state, chunk) for chunk in chunks]

        # max_batch=1: each request already is a deterministic batch (see the module docstring).
        self._face_pool = await asyncio.to_thread(
            BatchWorkerPool,
            "replay-face",
            f_process,
            threads=cfg.face_threads,
            max_batch=1,
            max_pending=FACE_IN_FLIGHT + 1,
            init=f_init,
            teardown=f_teardown,
        )
        # The audio threads gate windows with the live engine's VAD (one detector per thread).
        self._audio_pool = await asyncio.to_thread(
            BatchWorkerPool,
            "replay-audio",
            audio_chunks,
            threads=cfg.audio_threads,
            max_batch=1,
            max_pending=AUDIO_IN_FLIGHT + 1,
            init=audio_stage_init(cfg.vad_threshold if cfg.vad else None, self.models.make_speech_detector),
        )
        self._inference_pool = BatchWorkerPool(
            "replay-inference", inference_chunks, threads=1, max_batch=1, max_pending=INFERENCE_IN_FLIGHT + 1
        )

    async def close(self) -> None:
        for pool in (self._face_pool, self._audio_pool, self._inference_pool):
            if pool is not None:
                await asyncio.to_thread(pool.close)
        self._face_pool = self._audio_pool = self._inference_pool = None

    async def run(self, inputs: Sequence[ReplayInput]) -> list[ParticipantReplay]:
        """Replay every input (``jobs`` files at a time); a failing file never stops the others."""
        if self._face_pool is None:
            raise RuntimeError("start() the replayer first")
        self._wall_start = time.monotonic()
        self._session_start = min((i.offset_s for i in inputs), default=0.0)
        gate = asyncio.Semaphore(self.jobs)

        async def one(inp: ReplayInput) -> ParticipantReplay:
            async with gate:
                return await self.replay_one(inp)

        return list(await asyncio.gather(*(one(i) for i in inputs)))

    async def replay_one(self, inp: ReplayInput) -> ParticipantReplay:
        """One file; its errors end up in the returned record, never raised."""
        rec = ParticipantReplay(inp)
        try:
            rec.info = await asyncio.to_thread(probe, inp.path)
        except MediaError as exc:
            rec.error = str(exc)
            return rec
        except Exception as exc:  # anything else about opening the file is still that file's problem
            rec.error = f"{inp.path}: cannot be read: {exc}"
            return rec
        try:
            await self._pipeline(rec, rec.info)
        except Exception as exc:
            log.exception("replay of %s failed", inp.path)
            rec.error = rec.error or f"{inp.path}: replay failed: {type(exc).__name__}: {exc}"
        return rec

    # -- the pipeline ----------------------------------------------------------------------------

    async def _pipeline(self, rec: ParticipantReplay, info: MediaInfo) -> None:
        reader = MediaReader(info)
        pump = _EventPump(reader.events, asyncio.get_running_loop(), name=f"replay-decode-{rec.participant_id}")
        steps_slots = asyncio.Semaphore(self.steps_ahead)
        seq_q: asyncio.Queue[Any] = asyncio.Queue()
        emit_q: asyncio.Queue[Any] = asyncio.Queue()
        tasks = [
            asyncio.create_task(self._plan(rec, reader, pump, steps_slots, seq_q)),
            asyncio.create_task(self._sequence(rec, seq_q, emit_q)),
            asyncio.create_task(self._emit(rec, emit_q, steps_slots)),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            pump.stop()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _plan(
        self,
        rec: ParticipantReplay,
        reader: MediaReader,
        pump: _EventPump,
        steps_slots: asyncio.Semaphore,
        out: asyncio.Queue[Any],
    ) -> None:
        loop = asyncio.get_running_loop()
        timeline: Timeline | None = None
        chunk = _AudioChunk(loop.create_future())
        last_arrival = 0.0

        async def handle(plan: StepPlan) -> None:
            nonlocal chunk
            await steps_slots.acquire()
            face = await self._submit_face(rec, plan.face) if plan.face is not None else None
            row = -1
            if plan.window is not None:
                row = len(chunk.windows)
                chunk.windows.append(plan.window.samples)
            out.put_nowait(_PlannedStep(plan, face, chunk if row >= 0 else None, row))
            if plan.index % self.audio_batch == self.audio_batch - 1:
                await self._submit_audio(rec, chunk)
                chunk = _AudioChunk(loop.create_future())

        try:
            async for batch in pump.batches():
                for event in batch:
                    if timeline is None:
                        rec.origin = max(0.0, reader.first_time or 0.0)
                        plan = self.models.plan
                        timeline = Timeline(self.config, rec.origin, plan.window_samples, plan.min_audio_samples)
                    last_arrival = max(last_arrival, event.arrival)
                    for item in timeline.feed(event):
                        await handle(item)
        except MediaError as exc:
            rec.error = str(exc)  # keep what was decoded before the failure
        rec.end_s = max(reader.end_s, last_arrival)
        if timeline is not None:
            for item in timeline.finish(last_arrival):
                await handle(item)
            for key, n in timeline.counters.items():
                rec.count(key, n)
        await self._submit_audio(rec, chunk)
        if rec.error is None:
            try:
                reader.check_complete()
            except MediaError as exc:
                rec.error = str(exc)
        rec.count("video_frames", reader.video_frames)
        rec.count("audio_samples", reader.audio_samples)
        out.put_nowait(_END)

    async def _submit_face(self, rec: ParticipantReplay, sample: FaceSample) -> asyncio.Future[FaceOutput]:
        assert self._face_pool is not None
        await self._face_slots.acquire()
        fut = self._face_pool.submit(FaceJob(rec.participant_id, sample.frame, sample.media_time, sample.media_time))
        fut.add_done_callback(lambda _f: self._face_slots.release())
        return fut

    async def _submit_audio(self, rec: ParticipantReplay, chunk: _AudioChunk) -> None:
        assert self._audio_pool is not None
        if not chunk.windows:
            chunk.future.set_result([])
            return
        await self._audio_slots.acquire()
        jobs = tuple(AudioJob(rec.participant_id, w, 0.0, 0.0) for w in chunk.windows)
        rec.count("audio_windows", len(jobs))
        rec.count("audio_batches")
        fut = self._audio_pool.submit(jobs)

        def done(f: asyncio.Future[list[AudioOutput]]) -> None:
            self._audio_slots.release()
            _copy_outcome(f, chunk.future)

        fut.add_done_callback(done)

    async def _sequence(self, rec: ParticipantReplay, inq: asyncio.Queue[Any], out: asyncio.Queue[Any]) -> None:
        """The live engine's feature arrival, freshness and assembly, one step at a time."""
        cfg = self.config
        plan = self.models.plan
        face_seq = RollingSequence(plan.face_dim, cfg.seq_len)
        audio_seq = RollingSequence(plan.audio_dim, cfg.seq_len)
        norm = plan.new_normaliser()
        face_last: float | None = None
        face_last_media = 0.0
        audio_emb_last: float | None = None
        audio_emb_media = 0.0
        fps = sampling_fps(cfg)
        pending: list[_Outcome] = []
        while True:
            item = await inq.get()
            if item is _END:
                break
            step: _PlannedStep = item
            now = step.plan.time
            outcome = _Outcome(now, None)
            if step.face is not None and step.plan.face is not None:
                # The engine's _face_done, with zero latency: the face arrives at its step.
                try:
                    face = await step.face
                except Exception:
                    rec.count("face_errors")
                else:
                    if face.vector is None:
                        rec.count(f"face_{face.reason or 'none'}")
                    else:
                        face_seq.append(face.vector, step.plan.face.media_time)
                        face_last, face_last_media = now, step.plan.face.media_time
                        rec.count("faces")
            window = step.plan.window
            if step.chunk is not None and window is not None:
                # The engine's _finish_audio: an error or a VAD verdict of no speech embeds nothing.
                try:
                    audio = (await step.chunk.future)[step.row]
                except Exception:
                    rec.count("audio_errors")
                else:
                    if audio.vector is None:
                        rec.count("vad_gated")
                    else:
                        norm.observe_audio(audio.vector)
                        audio_seq.append(audio.vector, window.end_media_time)
                        audio_emb_last, audio_emb_media = now, window.end_media_time
                        rec.count("audio_embedded")
            face_active = face_live(
                True, step.plan.video_last, face_last, len(face_seq), now, cfg.modality_stale_s, fps
            )
            audio_active = audio_live(
                True,
                step.plan.audio_last,
                audio_emb_last,
                len(audio_seq),
                now,
                cfg.modality_stale_s,
                cfg.result_interval_s,
            )
            if face_active or audio_active:
                xf, xa, fm, am = assemble_inputs(face_seq, audio_seq, face_active, audio_active, norm)
                outcome.job = InferenceJob(rec.participant_id, xf, xa, fm, am)
                outcome.face_active, outcome.audio_active = face_active, audio_active
                # (captured, media) of the inputs used, as Engine._emit pairs them. An input is
                # "captured" when it arrives, and it arrives at its media time (bot.replay.timeline).
                used = ([(face_last_media, face_last_media)] if face_active else []) + (
                    [(audio_emb_media, audio_emb_media)] if audio_active else []
                )
                outcome.used = tuple(used)
            pending.append(outcome)
            if step.plan.index % self.inference_batch == self.inference_batch - 1:
                await self._submit_inference(pending, out)
                pending = []
        await self._submit_inference(pending, out)
        out.put_nowait(_END)

    async def _submit_inference(self, outcomes: list[_Outcome], out: asyncio.Queue[Any]) -> None:
        assert self._inference_pool is not None
        jobs = tuple(o.job for o in outcomes if o.job is not None)
        fut: asyncio.Future[list[Any]] | None = None
        if jobs:
            await self._inference_slots.acquire()
            fut = self._inference_pool.submit(jobs)
            fut.add_done_callback(lambda _f: self._inference_slots.release())
        out.put_nowait((outcomes, fut))

    async def _emit(self, rec: ParticipantReplay, inq: asyncio.Queue[Any], steps_slots: asyncio.Semaphore) -> None:
        """EMA and the result message, as ``Engine._emit`` builds them, on the media clock."""
        cfg = self.config
        smoother = EmaSmoother(
            alpha=cfg.ema_alpha,
            confidence_threshold=self.models.plan.threshold(cfg.confidence_threshold),
            ttl=cfg.ema_ttl_s,
            reset=cfg.ema_reset,
        )
        seq = 0
        offset = rec.input.offset_s
        last_time = rec.origin
        while True:
            item = await inq.get()
            if item is _END:
                break
            outcomes, fut = item
            preds: Iterator[Any] = iter(())
            error: str | None = None
            if fut is not None:
                try:
                    preds = iter(await fut)
                except Exception as exc:
                    error = f"inference failed: {exc}"
            for o in outcomes:
                steps_slots.release()
                if self.progress is not None:
                    self.progress(max(0.0, o.time - last_time))
                last_time = o.time
                if o.job is None:
                    rec.steps.append(StepRecord(o.time, None, None))
                    continue
                if error is not None:
                    next(preds, None)
                    rec.count("step_errors")
                    rec.steps.append(StepRecord(o.time, None, None, error))
                    continue
                pred = next(preds)
                profile = profile_of(o.face_active, o.audio_active) or "both"
                ok = pred.status == "ok" and pred.probs is not None
                # The original smooths the 4-dp probabilities it emits; so does the live engine.
                smoothed = smoother.update([round(float(p), 4) for p in pred.probs] if ok else None, o.time)
                seq += 1
                newest_captured, newest_media = max(o.used) if o.used else (o.time, None)
                result = EmotionResult(
                    participant_id=rec.participant_id,
                    seq=seq,
                    emotion=smoothed.label if ok else NEUTRAL_LABEL,
                    confidence=smoothed.score if ok else 0.0,
                    probs=tuple(float(p) for p in pred.probs) if ok else None,
                    modality=profile,
                    anomaly=bool(pred.anomaly.is_anomaly) if ok and pred.anomaly is not None else None,
                    anomaly_score=float(pred.anomaly.score) if ok and pred.anomaly is not None else None,
                    # Media clock: the step time stands for "now" and each input's media time for
                    # the moment it was captured, so latency is the age of the newest input.
                    latency_ms=max(0.0, (o.time - newest_captured) * 1000.0),
                    ts_ms=round((offset + o.time) * 1000.0),
                    media_time=None if newest_media is None else offset + newest_media,
                    captured_at_ms=round((offset + newest_captured) * 1000.0),
                    bundle_id=self.models.bundle.bundle_id,
                    trained=self.models.bundle.trained,
                    error=None if ok else (pred.error or "prediction failed"),
                )
                if self.realtime:
                    await self._pace(offset + o.time)
                rec.steps.append(StepRecord(o.time, profile, result))
                rec.count("results")
                if self.on_result is not None:
                    try:
                        self.on_result(result)
                    except Exception:
                        log.exception("replay result sink failed")

    async def _pace(self, session_time: float) -> None:
        delay = self._wall_start + (session_time - self._session_start) - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


def _copy_outcome(src: asyncio.Future[Any], dst: asyncio.Future[Any]) -> None:
    if dst.done():
        return
    if src.cancelled():
        dst.cancel()
    elif src.exception() is not None:
        dst.set_exception(src.exception())  # type: ignore[arg-type]
    else:
        dst.set_result(src.result())


class _EventPump:
    """Runs a blocking decoder on its own thread and hands its events to the loop in batches.

    At most ``DECODE_BATCHES_AHEAD`` batches wait on the loop, so decoding stays just ahead of the
    pipeline (decoded frames are large). Errors raised by the decoder are re-raised on the loop.
    """

    def __init__(self, events: Callable[[], Iterator[Event]], loop: asyncio.AbstractEventLoop, name: str) -> None:
        self._events = events
        self._loop = loop
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._slots = threading.Semaphore(DECODE_BATCHES_AHEAD)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    async def batches(self) -> AsyncIterator[list[Event]]:
        self._thread.start()
        while True:
            item = await self._queue.get()
            self._slots.release()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def stop(self) -> None:
        self._stopped.set()
        self._slots.release()

    def _send(self, item: Any) -> bool:
        while not self._slots.acquire(timeout=0.1):
            if self._stopped.is_set():
                return False
        if self._stopped.is_set():
            return False
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        return True

    def _run(self) -> None:
        batch: list[Event] = []
        events = self._events()
        try:
            for event in events:
                batch.append(event)
                if len(batch) >= DECODE_BATCH:
                    if not self._send(batch):
                        return
                    batch = []
            if batch and not self._send(batch):
                return
            self._send(_END)
        except BaseException as exc:
            if batch and not self._send(batch):
                return
            self._send(exc)
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()  # closes the decoder's containers now, not whenever it is collected
