"""One step of one participant on the live engine: sample, wait for features, predict, emit.

A step queues a face job (the face thread takes the newest received frame when it *starts* the
job), takes the newest audio window into its cohort's audio batch (unless the participant's
previous window is still in flight), waits for both, the face for at most ``face_wait_s`` and the
window for at most ``audio_wait_s``, then submits its predictor inputs to its cohort's predictor
batch and emits the result. Features that come back later join the sequence when they land (their
done callbacks), so a speaker whose Wav2Vec2 forward is slow keeps the same step rate as a silent
participant (docs/engine.md, "Profiles and speakers under load"). Every rule it applies is the
step core's (:mod:`bot.pipeline`): the sampling credit and audio-window rule, the freshness rules,
sequence assembly and result building, the same code replay runs on the media clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from bot.config import EngineConfig
from bot.live.groups import Cohort
from bot.live.state import ParticipantState
from bot.live.stats import below_target
from bot.pipeline.freshness import profile_of, stream_fresh
from bot.pipeline.pools import BatchWorkerPool, PoolClosed, PoolFull
from bot.pipeline.results import EmotionResult
from bot.pipeline.sampling import FaceDecision, take_audio_window
from bot.pipeline.slots import AudioWindow
from bot.pipeline.stages import AudioJob, AudioOutput, FaceJob, FaceOutput
from bot.pipeline.throttle import SamplingThrottle
from models.family import FeaturePlan
from models.predictor import Prediction

log = logging.getLogger(__name__)

# Face jobs one participant may have queued or running; more would only queue stale frames.
MAX_FACE_IN_FLIGHT = 1


class StepRunner:
    """The step half of :class:`bot.live.engine.Engine` (which builds everything declared here)."""

    config: EngineConfig
    features: FeaturePlan
    interval: float
    face_wait_s: float
    audio_wait_s: float
    light: bool
    clock: Callable[[], float]
    wall_clock: Callable[[], float]
    on_result: Callable[[EmotionResult], None]
    participants: dict[str, ParticipantState]
    throttle: SamplingThrottle
    face_pool: BatchWorkerPool[FaceJob, FaceOutput]
    counters: dict[str, int]

    # -- one step --------------------------------------------------------------------------------

    async def _step(self, st: ParticipantState, cohort: Cohort) -> None:
        try:
            await self._step_inner(st, cohort)
        except asyncio.CancelledError:
            raise
        except Exception:
            st.count("step_errors")
            log.exception("step for %s failed", st.pid)
        finally:
            st.step_running = False

    async def _step_inner(self, st: ParticipantState, cohort: Cohort) -> None:
        start = self.clock()
        face_fut = self._sample_face(st, start)
        audio = self._submit_audio(st, start, cohort)
        # Steps with an audio window become ready together (one forward); the others do not wait for them.
        batch = cohort.infer_audio if audio is not None else cohort.infer_plain
        member = batch.join()
        try:
            # Both waits are bounded: a step whose window or face is slow predicts with the features
            # it has, and the late one joins the sequence when it lands (its done callback). A
            # speaker's step thus costs no more than a silent participant's under load.
            if audio is not None:
                audio_fut, apply_audio = audio
                # Not a throttle cause: measured, it cost faces (and latency) without giving the
                # audio more windows (docs/engine.md, "Profiles and speakers under load").
                wait = max(self.audio_wait_s, self.config.audio_wait_light_s) if self.light else self.audio_wait_s
                await self._bounded_wait(audio_fut, start + wait, st, "audio_late")
                if audio_fut.done():
                    apply_audio(audio_fut)  # before the freshness check, whatever ran first
            if face_fut is not None:
                await self._bounded_wait(face_fut, start + self.face_wait_s, st, "face_late")
            if self.participants.get(st.pid) is not st or not st.analysed:
                return
            # Freshness is judged on what has come back, never on how late the step runs or what is
            # still in flight (bot.pipeline.freshness): a busy engine must not turn a participant
            # whose streams both flow into "voice only" or "video only".
            face_active, audio_active = st.features.activity(
                start,
                camera_on=st.camera_on,
                mic_on=st.mic_on,
                video_last=st.video_last_wall,
                audio_last=st.audio_last_wall,
                config=self.config,
                sampling_fps=self.throttle.fps,
            )
            if not (face_active or audio_active):
                st.profile = None
                return
            job = st.features.job(st.pid, face_active, audio_active)
            used = st.features.used(face_active, audio_active)
            st.inference_in_flight += 1
            try:
                pred = await batch.add(member, job)
            except (PoolFull, PoolClosed):
                st.count("inference_dropped")
                self._count("inference_dropped")
                return
            finally:
                st.inference_in_flight -= 1
        finally:
            batch.leave(member)
        if self.participants.get(st.pid) is not st or not st.analysed:
            return
        self._emit(st, pred, face_active, audio_active, used, start)

    async def _bounded_wait(self, fut: asyncio.Future[Any], deadline: float, st: ParticipantState, late: str) -> bool:
        """Wait for ``fut`` until ``deadline`` (engine clock); count ``late`` and return False if it
        is not done by then."""
        if fut.done():
            return True
        remaining = deadline - self.clock()
        if remaining > 0:
            await asyncio.wait({fut}, timeout=remaining)
        if not fut.done():
            st.count(late)
            return False
        return True

    def _sample_face(self, st: ParticipantState, now: float) -> asyncio.Future[FaceOutput] | None:
        """Take the newest frame for the face pool, if the camera is live and the throttle allows."""
        if not (st.camera_on and st.analysed):
            return None
        decision = st.face_credit.decide(
            st.video_last_wall, now, self.config.modality_stale_s, self.throttle.fps, self.interval
        )
        if decision is FaceDecision.STALE:
            return None
        if decision is FaceDecision.THROTTLED:
            st.count("face_throttled")
            return None
        if st.face_in_flight >= MAX_FACE_IN_FLIGHT:
            st.count("face_busy")
            return None
        if st.video_slot.peek() is None:
            return None
        # The face thread takes the newest frame when it starts the job (see FrameBox).
        job = FaceJob(st.pid, None, 0.0, 0.0, source=st.video_slot.take)
        try:
            fut = self.face_pool.submit(job)
        except (PoolFull, PoolClosed):
            st.count("face_dropped")
            self._count("face_dropped")
            return None
        st.face_credit.spend()
        st.face_in_flight += 1
        st.sample_times.append(now)
        st.count("frames_sampled")
        fut.add_done_callback(lambda f: self._face_done(st, job, f, now))
        return fut

    def _face_done(
        self, st: ParticipantState, job: FaceJob, fut: asyncio.Future[FaceOutput], sampled_at: float
    ) -> None:
        st.face_in_flight -= 1
        if self.participants.get(st.pid) is not st or fut.cancelled():
            return
        if fut.exception() is not None:
            st.count("face_errors")
            st.features.miss_face(sampled_at)
            return
        out = fut.result()
        if out.vector is not None and not (st.camera_on and st.analysed):
            return
        # The step that took the frame stamps the face, however late it came back.
        st.count(st.features.add_face(out, job.media_time, job.wall_time, sampled_at))

    def _submit_audio(
        self, st: ParticipantState, now: float, cohort: Cohort
    ) -> tuple[asyncio.Future[AudioOutput], Callable[[asyncio.Future[AudioOutput]], None]] | None:
        """Queue the newest window, unless the stream is stale, too short or digital silence, or
        this participant's previous window is still in flight (``audio_busy``: a newer window
        would only queue behind it, and the one in flight keeps the audio current).

        Returns the future and the function that applies its output (idempotent: the future's done
        callback and the step both call it, whichever comes first applies it)."""
        if not (st.mic_on and st.analysed) or not stream_fresh(
            True, st.audio_last_wall, now, self.config.modality_stale_s
        ):
            return None
        if st.audio_in_flight > 0:
            st.count("audio_busy")
            return None
        window, silent = take_audio_window(st.audio_ring, self.features.min_audio_samples, self.features.window_samples)
        if silent:
            st.count("audio_silent")
            self._count("audio_silent")
            st.features.miss_audio(now)  # digital silence: a window without speech
        if window is None:
            return None
        fut = cohort.audio.add(
            cohort.audio.join(), AudioJob(st.pid, window.samples, window.end_media_time, window.end_wall_time)
        )
        st.audio_in_flight += 1
        applied = False

        def apply(done: asyncio.Future[AudioOutput]) -> None:
            nonlocal applied
            if not applied:
                applied = True
                self._audio_done(st, done, window, now)

        fut.add_done_callback(apply)
        return fut, apply

    def _audio_done(
        self, st: ParticipantState, fut: asyncio.Future[AudioOutput], window: AudioWindow, sampled_at: float
    ) -> None:
        st.audio_in_flight -= 1
        if self.participants.get(st.pid) is not st or fut.cancelled():
            return
        exc = fut.exception()
        if isinstance(exc, (PoolFull, PoolClosed)):
            # Dropped for load: no evidence about the voice, so it does not age the audio.
            st.count("audio_dropped")
            self._count("audio_dropped")
            return
        if exc is not None:
            st.count("audio_errors")
            st.features.miss_audio(sampled_at)
            return
        if not st.mic_on or not st.analysed:
            return
        out = fut.result()
        st.speech_prob = out.speech_prob
        if out.vector is not None:
            st.speech_last = self.clock()
        # The step that took the window stamps the embedding, however late it came back.
        key = st.features.add_audio(out, window.end_media_time, window.end_wall_time, sampled_at)
        st.count(key)
        if key == "vad_gated":
            self._count("vad_gated")

    # -- results ---------------------------------------------------------------------------------

    def _emit(
        self,
        st: ParticipantState,
        pred: Prediction,
        face_active: bool,
        audio_active: bool,
        used: tuple[tuple[float, float], ...],
        started: float,
    ) -> None:
        now = self.clock()
        # The newest frame used: its receive time and its own stream's media time, as a pair.
        profile = profile_of(face_active, audio_active) or "both"
        result = st.results.build(
            pred,
            profile,
            used,
            now=self.wall_clock(),
            smooth_at=now,
            reduced_rate=below_target(st, now, self.interval),
            processing_s=now - started,
        )
        st.profile = profile
        st.profiles_seen.add(profile)
        st.latencies_ms.append(result.latency_ms)
        st.result_times.append(now)
        st.count("results")
        self._count("results")
        try:
            self.on_result(result)
        except Exception:
            log.exception("result sink failed for %s", st.pid)

    def _count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n
