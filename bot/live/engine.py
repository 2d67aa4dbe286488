"""The per-participant real-time engine: step scheduling, feature pools, freshness, batched inference.

Thread map (see docs/engine.md):
- asyncio loop: receives frame references, runs the scheduler tick, moves results out;
- face pool (2 threads): RGB conversion + MediaPipe, one landmarker per thread;
- audio pool (2 threads): Silero VAD, then Wav2Vec2 over the speech windows, batched across
  participants; one VAD model per thread;
- inference pool (1 thread): one batched predictor call for every participant that is ready.

Scheduling. Every participant has a step every ``result_interval_s`` (0.3 s) on a fixed phase.
A step queues a face job (the face thread takes the newest received frame when it *starts* the
job, so time spent queued never ages the frame) and the newest 0.6 s of audio (audio pool), waits
for both (the face for at most ``face_wait_s``, the window for at most ``audio_wait_s``), then
submits its predictor inputs. Sampling at
the step, rather than on an independent 5 fps clock, is what keeps results fresh: the newest
frame a result uses is at most one frame interval old when its face job starts, instead of up to
a whole sampling period older (up to 200 ms, ~100 ms on average, at 5 fps). It is also what the
original's pump did (one frame per iteration) and close to the offline training spacing (10
frames over a ~3 s clip). So the face sampling rate is at most one frame per step (3.33 fps); the throttle
lowers it below that by skipping the face on some steps.

Grouping. Participants are placed on ``phase_slots`` phases of the period (a 25 ms grid) in
groups of at most ``group_size`` (8): the steps of a group start on the same tick, sample their
faces together, submit their audio windows together (``submit_many``: one Wav2Vec2 forward) and
their predictor inputs together (one predictor call per group, held until every member is ready,
which the face wait bounds). The predictor's cost hardly grows with the batch, so this is what keeps
inference cheap. Speakers (speech within the last ``speech_hold_s``) are grouped with speakers, so
that their windows share a forward and the silent do not wait for it; a participant who starts or
stops speaking moves to a group of its kind at its next step, never later than one period. Groups
are spread farthest-first over the grid, so that the work of the period arrives evenly.

The per-step rules (sampling, freshness, sequence assembly, result building) are the step core of
:mod:`bot.pipeline`, shared with replay; this module only schedules them on the wall clock.
Grouping and batching live in :mod:`bot.live.groups`, statistics in :mod:`bot.live.stats`.

Time is explicit: every input carries its media time (from the frame's pts) and the engine reads
time from two injectable clocks (``clock`` monotonic for scheduling, ``wall_clock`` for the
``capturedAt``/``ts`` fields), so replay and tests can drive it; tests may call :meth:`tick`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bot.config import EngineConfig
from bot.live.groups import Cohort, PhaseGrid
from bot.live.loadguard import (
    COMPUTE_NICE,
    LOOP_LAG_LIMIT_S,
    SWITCH_INTERVAL_S,
    LoopLagMonitor,
    shorten_gil_switch_interval,
)
from bot.live.state import ParticipantState
from bot.live.stats import engine_snapshot, participant_stats
from bot.live.step import StepRunner
from bot.pipeline.features import Features, feature_plan, new_smoother
from bot.pipeline.intraop import IntraOpThreads
from bot.pipeline.pools import BatchWorkerPool
from bot.pipeline.results import BundleInfo, EmotionResult, ResultStream, ms_truncated
from bot.pipeline.slots import AudioRing
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
from bot.pipeline.throttle import SamplingThrottle
from models.constants import SAMPLE_RATE
from models.extractors import AudioExtractor, FaceExtractor
from models.family import BatchPredictor, FeaturePlan
from models.predictor import Prediction
from models.sequence import NormStats
from models.vad import SpeechDetector

log = logging.getLogger(__name__)


ResultSink = Callable[[EmotionResult], None]
DetectorFactory = Callable[[], SpeechDetector]


class Engine(StepRunner):
    """Turns per-participant media into results at a steady cadence, on bounded pools.

    ``vad`` optionally replaces the speech detector factory (tests inject fakes); gating is on
    when ``config.vad`` is true, with Silero VAD at ``config.vad_threshold`` by default.
    ``phase_slots`` and ``group_size`` override the config's scheduler tunables (tests).
    ``compute_nice`` is added to the pool threads' OS nice value, ``gil_switch_s`` shortens the GIL
    hand-off interval when the engine starts (None: leave it), ``loop_lag_limit_s`` is the loop lag
    that counts as overload (see :mod:`bot.live.loadguard`). ``intra_op``, when given, lets a
    Wav2Vec2 forward use every core while at most ``config.boost_max_participants`` are analysed
    (:mod:`bot.pipeline.intraop`); the service passes one, tests that do not leave torch alone.
    """

    def __init__(
        self,
        config: EngineConfig,
        *,
        predictor: BatchPredictor,
        norm: NormStats | None = None,
        features: FeaturePlan | None = None,
        make_face_extractor: Callable[[], FaceExtractor],
        audio_embedder: AudioExtractor,
        bundle: BundleInfo,
        on_result: ResultSink,
        vad: DetectorFactory | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        phase_slots: int | None = None,
        face_wait_s: float | None = None,
        audio_wait_s: float | None = None,
        batch_hold_s: float | None = None,
        group_size: int | None = None,
        compute_nice: int = COMPUTE_NICE,
        gil_switch_s: float | None = SWITCH_INTERVAL_S,
        loop_lag_limit_s: float = LOOP_LAG_LIMIT_S,
        intra_op: IntraOpThreads | None = None,
    ) -> None:
        self.config = config
        # What the bundle declares: extractor dims, the audio window, one normaliser per participant.
        self.features = feature_plan(features, norm, config.min_live_samples)
        self.bundle = bundle
        self.on_result = on_result
        self.clock = clock
        self.wall_clock = wall_clock
        self.interval = config.result_interval_s
        self.started_at = clock()
        self.grid = PhaseGrid(
            self.started_at,
            self.interval,
            config.phase_slots if phase_slots is None else phase_slots,
            config.group_size if group_size is None else group_size,
        )
        self.phase_slots = self.grid.slots
        self.group_size = self.grid.group_size
        # A step waits for its face at most this long after it started; a later face counts
        # from the next step (the step never stalls on a slow face pool).
        self.face_wait_s = self.interval / 2 if face_wait_s is None else face_wait_s
        # The same bound for the step's audio window: a speaker's step must not wait for a slow
        # Wav2Vec2 forward while a silent participant's does not (fairness under load); a later
        # embedding joins the sequence when it lands and keeps the audio current meanwhile.
        self.audio_wait_s = self.face_wait_s if audio_wait_s is None else audio_wait_s
        # Splitting a group's predictor call costs a whole extra call (the cost hardly depends on
        # the batch size), so the first ready member waits for the others: they are bounded by the
        # face wait, and the hold only covers scheduling slack beyond it.
        self.batch_hold_s = self.face_wait_s + config.batch_hold_slack_s if batch_hold_s is None else batch_hold_s
        self.participants: dict[str, ParticipantState] = {}
        # One face per step at most, so the sampling ceiling is the step rate.
        self.max_fps = min(config.target_fps, 1.0 / self.interval)
        # A group's faces go to the pool in one burst; only more than a group's worth still there
        # when another group starts is a backlog (measured: a limit of 3 halved the sampling rate
        # on bursts the pool drained in time, and doubled the end-to-end p50 at 10 participants).
        if config.face_queue_limit < 0:
            raise ValueError(
                f"engine.face_queue_limit must be >= 0 (0: one group's worth), got {config.face_queue_limit}"
            )
        self.face_queue_limit = config.face_queue_limit or self.group_size
        self.throttle = SamplingThrottle(
            self.max_fps,
            min(config.min_fps, self.max_fps),
            self.face_queue_limit,
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
            max_pending=max(2 * self.group_size, 4 * self.face_queue_limit),
            init=f_init,
            teardown=f_teardown,
            nice=compute_nice,
        )
        self.vad_enabled = bool(config.vad)
        self.audio_pool: BatchWorkerPool[AudioJob, AudioOutput] = BatchWorkerPool(
            "audio",
            audio_stage(audio_embedder, intra_op),
            threads=config.audio_threads,
            max_batch=config.audio_max_batch,
            max_pending=64,
            init=audio_stage_init(config.vad_threshold if self.vad_enabled else None, vad),
            nice=compute_nice,
        )
        self.inference_pool: BatchWorkerPool[InferenceJob, Prediction] = BatchWorkerPool(
            "inference",
            inference_stage(predictor),
            threads=config.inference_threads,
            max_batch=config.inference_max_batch,
            max_pending=128,
            nice=compute_nice,
        )
        self.intra_op = intra_op
        self.light = False  # judged as each group starts (_judge_load)
        # How late the loop runs its timers: a lagging loop is overload, like a late step.
        self.loop_lag = LoopLagMonitor(clock, limit_s=loop_lag_limit_s)
        self.gil_switch_s = gil_switch_s
        self.counters: dict[str, int] = {}
        self._late_since_observe = 0
        self._task: asyncio.Task[None] | None = None
        self._steps: set[asyncio.Task[None]] = set()

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            if self.gil_switch_s is not None:
                shorten_gil_switch_interval(self.gil_switch_s)
            self.loop_lag.start()
            self._task = asyncio.create_task(self._run(), name="engine-tick")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.loop_lag.stop()
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
            features=Features.new(self.features, cfg.seq_len),
            results=ResultStream(pid, new_smoother(cfg, self.features), self.bundle, to_ms=ms_truncated),
            audio_ring=AudioRing(int(max(cfg.audio_buffer_s, self.features.audio.window_s or 0.0) * SAMPLE_RATE)),
        )
        st.added_at = self.clock()
        st.slot = self.grid.choose(self.participants.values(), None, speaker=False)
        st.next_due = self.grid.time_after(st.slot, st.added_at)
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
                st.features.clear_audio()
                st.audio_ring.clear()
        if camera is not None and camera != st.camera_on:
            st.camera_on = camera
            if not camera:
                st.features.clear_face()
                st.video_slot.clear()

    def set_analysis(self, pid: str, enabled: bool) -> None:
        """Opt-out: stop analysing and delete buffered features at once."""
        st = self.participants.get(pid)
        if st is None:
            return
        st.analysed = enabled
        if not enabled:
            # The running speaker statistics are derived from the participant's voice: gone too.
            st.features = Features.new(self.features, self.config.seq_len)
            st.audio_ring.clear()
            st.video_slot.clear()

    # -- media input (called on the loop by the track readers; must stay cheap) ------------------

    def on_video_frame(self, pid: str, frame: Any, media_time: float) -> None:
        st = self.participants.get(pid)
        if st is None:
            return
        if not _is_frame(frame):
            # Not a picture at all: counted here, and it must not displace a real frame.
            st.count("face_bad_frame")
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
        max_sleep = min(0.02, self.interval / 5)
        while True:
            try:
                self.tick()
            except Exception:
                log.exception("engine tick failed")
            # Wake at the next due step (bounded), so steps start on their phase, not a tick later.
            nxt = min((st.next_due for st in self.participants.values()), default=math.inf)
            await asyncio.sleep(min(max_sleep, max(0.001, nxt - self.clock())))

    def tick(self) -> None:
        """Start the step of every participant that is due (at most one running per participant).

        The steps started by one tick form a cohort: their audio windows and predictor inputs are
        submitted together (see :class:`bot.live.groups.Cohort`).
        """
        now = self.clock()
        cohort: Cohort | None = None
        starting: list[ParticipantState] = []
        for st in list(self.participants.values()):
            if not st.analysed or now < st.next_due:
                continue
            if st.step_running:
                if st.late_due != st.next_due:
                    st.late_due = st.next_due
                    st.count("steps_late")
                    self._late_since_observe += 1
                continue
            # Stay on the participant's phase; periods missed entirely are skipped and counted.
            missed = math.floor((now - st.next_due) / self.interval)
            if missed > 0:
                st.count("steps_skipped", missed)
            due = st.next_due + missed * self.interval
            speaker = st.speech_last is not None and now - st.speech_last <= self.config.speech_hold_s
            if speaker != st.speaker:
                # Regroup with participants of the new kind; the next step comes sooner, never later.
                st.speaker = speaker
                st.slot = self.grid.choose(self.participants.values(), st, speaker)
                st.count("regrouped")
            else:
                self.grid.consolidate(self.participants.values(), st)
            st.next_due = self.grid.time_after(st.slot, due)
            st.step_running = True
            if cohort is None:
                # The throttle sees the face queue as a new group finds it: what earlier groups
                # left behind. A group's own burst (cleared within a few face times) is not a
                # backlog; jobs still queued when the next group arrives are.
                # A step still running when its next one is due means the engine as a whole is not
                # keeping up (inference or audio, not only faces): that counts as overload too, so
                # the sampling rate comes down for everyone together.
                # One late step is noise (a slow face, a long batch); a quarter of the meeting late
                # since the last group is the engine falling behind.
                # A loop that runs its timers late is the first sign of compute starving the thread
                # that keeps peers connected (loadguard): less sampling before it starves.
                behind = self._late_since_observe >= max(2, len(self.participants) // 4)
                cause = "loop_lag" if self.loop_lag.lagging(now) else "late_steps" if behind else None
                self.throttle.observe(self.face_pool.depth, now, overloaded=cause is not None, cause=cause)
                self._late_since_observe = 0
                self._judge_load(cause)
                cohort = Cohort(self.audio_pool, self.inference_pool, self.batch_hold_s)
            starting.append(st)
        if cohort is None:
            return
        # A group's faces go to the pool in the order its steps start, and the face thread takes
        # each frame when it starts the job, while the group's results leave together: the first
        # face's frame is the oldest when they do. The order turns by one place every step (the
        # front goes to the back, newcomers join at the back), so every member passes through
        # every place and all get the same latency distribution (measured before: p50 81 ms for
        # the last of a group of 8 against 167 ms for the first, docs/engine.md, "Order within a
        # group").
        starting.sort(key=lambda s: s.start_order if s.start_order >= 0 else math.inf)
        starting = starting[1:] + starting[:1]
        for order, st in enumerate(starting):
            st.start_order = order
            task = asyncio.create_task(self._step(st, cohort), name=f"step-{st.pid}")
            self._steps.add(task)
            task.add_done_callback(self._steps.discard)

    def _judge_load(self, overload: str | None) -> None:
        """Light: few participants and nothing behind. Then a forward may use every core and a step
        may wait longer for its window (``audio_wait_light_s``)."""
        analysed = sum(1 for st in self.participants.values() if st.analysed)
        self.light = overload is None and analysed <= self.config.boost_max_participants
        if self.intra_op is not None:
            self.intra_op.choose(self.light)

    @property
    def sampling_fps(self) -> float:
        return self.throttle.fps

    # -- introspection ---------------------------------------------------------------------------

    def participant_stats(self, st: ParticipantState) -> dict[str, Any]:
        return participant_stats(self, st)

    def snapshot(self) -> dict[str, Any]:
        return engine_snapshot(self)


def _is_frame(frame: Any) -> bool:
    """A decoded picture the face stage can convert (checked by type only: cheap, on the loop)."""
    return isinstance(frame, np.ndarray) or hasattr(frame, "to_ndarray")
