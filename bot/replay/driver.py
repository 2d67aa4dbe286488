"""The replay driver: recordings through the step core (``bot.pipeline``) that the live engine runs.

Per file, three coroutines form a pipeline on the event loop, fed by one decode thread:

* **decode thread** (one per file): :class:`~bot.replay.decode.MediaReader` decodes and resamples,
  and hands batches of arrival-ordered events to the loop (bounded, so it never runs far ahead);
* **planner** (loop): the :class:`~bot.replay.timeline.Timeline` plans the steps; the frame a step
  samples goes to the face pool at once, the audio windows go to the audio pool in chunks;
* **sequencer** (loop): in step order, applies the face vectors and audio embeddings to the step
  core's :class:`~bot.pipeline.features.Features` (freshness rules, sequence assembly) and sends
  chunks of predictor inputs to inference;
* **emitter** (loop): the step core's :class:`~bot.pipeline.results.ResultStream` (EMA smoothing,
  the result message), with the media clock in place of the wall clock.

The decode thread is :class:`bot.replay.pump.EventPump`; the models and per-file records are in
:mod:`bot.replay.records`. Replay never imports the live engine (``bot.live``).

The compute runs on the same stages and pool class as the live engine (``bot/pipeline/stages.py``,
:class:`bot.pipeline.pools.BatchWorkerPool`): face (2 threads, one MediaPipe landmarker each), audio
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
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bot.config import EngineConfig
from bot.pipeline.features import Features, new_smoother
from bot.pipeline.freshness import profile_of
from bot.pipeline.pools import BatchWorkerPool, chain_future
from bot.pipeline.results import EmotionResult, ResultStream, ms_rounded
from bot.pipeline.sampling import sampling_fps
from bot.pipeline.stages import (
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
from bot.replay.decode import MediaError, MediaInfo, MediaReader, probe
from bot.replay.inputs import ReplayInput
from bot.replay.pump import END, EventPump
from bot.replay.records import ParticipantReplay, ReplayModels, StepRecord
from bot.replay.timeline import FaceSample, StepPlan, Timeline

log = logging.getLogger(__name__)

# Pipeline bounds (per file unless noted). STEPS_AHEAD must exceed one audio chunk plus one
# inference chunk, or the planner could wait for an emitter that waits for the planner.
STEPS_AHEAD_MIN = 48
FACE_IN_FLIGHT = 8  # per replayer: frames queued or running in the face pool
AUDIO_IN_FLIGHT = 4  # per replayer: audio chunks queued or running
INFERENCE_IN_FLIGHT = 4  # per replayer


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
        pump = EventPump(reader.events, asyncio.get_running_loop(), name=f"replay-decode-{rec.participant_id}")
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
        pump: EventPump,
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
        out.put_nowait(END)

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
            chain_future(f, chunk.future)

        fut.add_done_callback(done)

    async def _sequence(self, rec: ParticipantReplay, inq: asyncio.Queue[Any], out: asyncio.Queue[Any]) -> None:
        """The step core's feature arrival, freshness and assembly, one step at a time.

        Features arrive with zero latency: the face and the audio window a step sampled count for
        that step, and an input is "captured" at its media time (see bot/replay/timeline.py).
        """
        cfg = self.config
        features = Features.new(self.models.plan, cfg.seq_len)
        fps = sampling_fps(cfg)
        pending: list[_Outcome] = []
        while True:
            item = await inq.get()
            if item is END:
                break
            step: _PlannedStep = item
            now = step.plan.time
            outcome = _Outcome(now, None)
            sample = step.plan.face
            if step.face is not None and sample is not None:
                try:
                    face = await step.face
                except Exception:
                    rec.count("face_errors")
                    features.miss_face(now)
                else:
                    rec.count(features.add_face(face, sample.media_time, sample.media_time, now))
            window = step.plan.window
            if step.chunk is not None and window is not None:
                # An error or a VAD verdict of no speech embeds nothing.
                try:
                    audio = (await step.chunk.future)[step.row]
                except Exception:
                    rec.count("audio_errors")
                    features.miss_audio(now)
                else:
                    rec.count(features.add_audio(audio, window.end_media_time, window.end_media_time, now))
            elif step.plan.silent:
                features.miss_audio(now)  # digital silence makes no embedding: a miss, as live
            face_active, audio_active = features.activity(
                now,
                camera_on=True,
                mic_on=True,
                video_last=step.plan.video_last,
                audio_last=step.plan.audio_last,
                config=cfg,
                sampling_fps=fps,
            )
            if face_active or audio_active:
                outcome.job = features.job(rec.participant_id, face_active, audio_active)
                outcome.face_active, outcome.audio_active = face_active, audio_active
                outcome.used = features.used(face_active, audio_active)
            pending.append(outcome)
            if step.plan.index % self.inference_batch == self.inference_batch - 1:
                await self._submit_inference(pending, out)
                pending = []
        await self._submit_inference(pending, out)
        out.put_nowait(END)

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
        """The step core's result building (EMA, the message), on the media clock.

        The step time stands for "now" and each input's media time for the moment it was captured,
        so latency is the age of the newest input; times in the message are shifted by the file's
        session offset.
        """
        stream = ResultStream(
            rec.participant_id,
            new_smoother(self.config, self.models.plan),
            self.models.bundle,
            offset=rec.input.offset_s,
            to_ms=ms_rounded,
        )
        offset = rec.input.offset_s
        last_time = rec.origin
        while True:
            item = await inq.get()
            if item is END:
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
                profile = profile_of(o.face_active, o.audio_active) or "both"
                result = stream.build(next(preds), profile, o.used, now=o.time, smooth_at=o.time)
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
