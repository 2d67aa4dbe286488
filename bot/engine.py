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
for both (the face for at most ``face_wait_s``), then submits its predictor inputs. Sampling at
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
inference cheap. Speakers (speech within the last ``SPEECH_HOLD_S``) are grouped with speakers, so
that their windows share a forward and the silent do not wait for it; a participant who starts or
stops speaking moves to a group of its kind at its next step, never later than one period. Groups
are spread farthest-first over the grid, so that the work of the period arrives evenly.

Time is explicit: every input carries its media time (from the frame's pts) and the engine reads
time from two injectable clocks (``clock`` monotonic for scheduling, ``wall_clock`` for the
``capturedAt``/``ts`` fields), so replay and tests can drive it; tests may call :meth:`tick`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import threading
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
from bot.slots import AudioRing
from bot.stages import (
    AudioJob,
    AudioOutput,
    FaceJob,
    FaceOutput,
    FrameItem,
    InferenceJob,
    audio_stage,
    audio_stage_init,
    face_stage,
    inference_stage,
)
from bot.throttle import SamplingThrottle
from models.constants import NEUTRAL_LABEL, SAMPLE_RATE
from models.extractors import REFERENCE_AUDIO, REFERENCE_FACE
from models.family import FeaturePlan
from models.sequence import Normaliser, NormStats, RollingSequence, assemble_inputs
from models.smoothing import EmaSmoother

log = logging.getLogger(__name__)

# Live windows shorter than this are not embedded (the original required >= 1200 samples live and
# >= 2400 offline; we use the offline rule so serving matches training).
MIN_LIVE_SAMPLES = 2400
# A window whose standard deviation is below this is digital silence: skipped before the VAD.
SILENCE_STD = 1e-6
# Phases per result period on which groups of participants are placed (see the module docstring).
PHASE_SLOTS = 12
# A participant counts as a speaker for this long after its last window with speech (so that it
# is not regrouped at every pause between words).
SPEECH_HOLD_S = 2.0
# How long a group's first ready predictor input may wait for the rest, beyond the face wait
# (members are bounded by the face wait anyway; this only covers scheduling slack).
BATCH_HOLD_SLACK_S = 0.05
# Participants per group. The predictor's cost is nearly flat in the batch size (production size,
# one core: ~19 ms for 1 row, ~28 ms for 3, ~35 ms for 10; XGBoost's 18,900 trees dominate), so few
# large groups cost far less inference than many small ones; a group's face burst (8 frames on 2
# threads, ~30 ms) is cleared long before the next group arrives.
GROUP_SIZE = 8
# Face jobs one participant may have queued or running; more would only queue stale frames.
MAX_FACE_IN_FLIGHT = 1
# Window over which per-participant rates are computed for telemetry.
RATE_WINDOW_S = 5.0
# A participant below this share of the step rate is shown as "reduced rate" (telemetry, pages).
BELOW_TARGET = 0.9


class FrameBox:
    """The newest received frame of one participant, handed from the loop to a face thread.

    The loop puts every received frame (a reference; an untaken older one is replaced and counted
    by the caller); the face thread takes it when it *starts* the job, so queueing in the face
    pool never makes the analysed frame older. A lock makes put/take/clear atomic across threads.
    """

    __slots__ = ("_item", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._item: FrameItem | None = None

    def put(self, item: FrameItem) -> None:
        with self._lock:
            self._item = item

    def take(self) -> FrameItem | None:
        with self._lock:
            item, self._item = self._item, None
        return item

    def peek(self) -> FrameItem | None:
        return self._item

    def clear(self) -> None:
        with self._lock:
            self._item = None


@dataclass
class BundleInfo:
    bundle_id: str
    trained: bool


def _int_dict() -> dict[str, int]:
    return {}


@dataclass
class ParticipantState:
    """Everything the engine holds for one remote participant; dropped whole on leave.

    Every container is bounded: sequences hold ``seq_len`` vectors, the ring ``audio_buffer_s`` of
    samples, the slot one frame, the deques fixed maxlens; counters are a fixed set of keys.
    """

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
    norm: Normaliser
    slot: int = 0
    speaker: bool = False
    speech_last: float | None = None
    video_slot: FrameBox = field(default_factory=FrameBox)
    video_last_wall: float | None = None
    audio_last_wall: float | None = None
    face_last_wall: float | None = None
    face_last_media: float = 0.0
    face_last_captured: float = 0.0
    audio_emb_last_wall: float | None = None
    audio_emb_media: float = 0.0
    audio_emb_captured: float = 0.0
    speech_prob: float | None = None
    face_credit: float = 1.0
    next_due: float = 0.0
    late_due: float | None = None
    step_running: bool = False
    seq: int = 0
    profile: str | None = None
    profiles_seen: set[str] = field(default_factory=set)
    face_in_flight: int = 0
    audio_in_flight: int = 0
    inference_in_flight: int = 0
    counters: dict[str, int] = field(default_factory=_int_dict)
    added_at: float = 0.0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=500))
    result_times: deque[float] = field(default_factory=lambda: deque(maxlen=64))
    sample_times: deque[float] = field(default_factory=lambda: deque(maxlen=64))

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n


ResultSink = Callable[[EmotionResult], None]
DetectorFactory = Callable[[], Any]


class Engine:
    """Turns per-participant media into results at a steady cadence, on bounded pools.

    ``vad`` optionally replaces the speech detector factory (tests inject fakes); gating is on
    when ``config.vad`` is true, with Silero VAD at ``config.vad_threshold`` by default.
    """

    def __init__(
        self,
        config: EngineConfig,
        *,
        predictor: Any,
        norm: NormStats | None = None,
        features: FeaturePlan | None = None,
        make_face_extractor: Callable[[], Any],
        audio_embedder: Any,
        bundle: BundleInfo,
        on_result: ResultSink,
        vad: DetectorFactory | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        phase_slots: int = PHASE_SLOTS,
        face_wait_s: float | None = None,
        batch_hold_s: float | None = None,
        group_size: int = GROUP_SIZE,
    ) -> None:
        if phase_slots < 1:
            raise ValueError("phase_slots must be >= 1")
        self.config = config
        if features is None:
            if norm is None:
                raise ValueError("pass the bundle's feature plan (or, for the reference family, its norm stats)")
            fixed = norm
            features = FeaturePlan(REFERENCE_FACE, REFERENCE_AUDIO, MIN_LIVE_SAMPLES, lambda: fixed)
        # What the bundle declares: extractor dims, the audio window, one normaliser per participant.
        self.features = features
        self.bundle = bundle
        self.on_result = on_result
        self.clock = clock
        self.wall_clock = wall_clock
        self.interval = config.result_interval_s
        self.phase_slots = phase_slots
        # A step waits for its face at most this long after it started; a later face counts
        # from the next step (the step never stalls on a slow face pool).
        self.face_wait_s = self.interval / 2 if face_wait_s is None else face_wait_s
        # Splitting a group's predictor call costs a whole extra call (the cost hardly depends on
        # the batch size), so the first ready member waits for the others: they are bounded by the
        # face wait, and the hold only covers scheduling slack beyond it.
        self.batch_hold_s = self.face_wait_s + BATCH_HOLD_SLACK_S if batch_hold_s is None else batch_hold_s
        self.group_size = max(1, group_size)
        self.participants: dict[str, ParticipantState] = {}
        # One face per step at most, so the sampling ceiling is the step rate.
        self.max_fps = min(config.target_fps, 1.0 / self.interval)
        self.throttle = SamplingThrottle(
            self.max_fps,
            min(config.min_fps, self.max_fps),
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
            max_pending=max(2 * self.group_size, 4 * config.face_queue_limit),
            init=f_init,
            teardown=f_teardown,
        )
        self.vad_enabled = bool(config.vad)
        self.audio_pool: BatchWorkerPool[AudioJob, AudioOutput] = BatchWorkerPool(
            "audio",
            audio_stage(audio_embedder),
            threads=config.audio_threads,
            max_batch=config.audio_max_batch,
            max_pending=64,
            init=audio_stage_init(config.vad_threshold if self.vad_enabled else None, vad),
        )
        self.inference_pool: BatchWorkerPool[InferenceJob, Any] = BatchWorkerPool(
            "inference",
            inference_stage(predictor),
            threads=config.inference_threads,
            max_batch=config.inference_max_batch,
            max_pending=128,
        )
        self.counters: dict[str, int] = {}
        self._late_since_observe = 0
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
            face_seq=RollingSequence(self.features.face_dim, cfg.seq_len),
            audio_seq=RollingSequence(self.features.audio_dim, cfg.seq_len),
            audio_ring=AudioRing(int(max(cfg.audio_buffer_s, self.features.audio.window_s or 0.0) * SAMPLE_RATE)),
            norm=self.features.new_normaliser(),
            smoother=EmaSmoother(
                alpha=cfg.ema_alpha,
                confidence_threshold=self.features.threshold(cfg.confidence_threshold),
                ttl=cfg.ema_ttl_s,
                reset=cfg.ema_reset,
            ),
        )
        st.added_at = self.clock()
        st.slot, st.next_due = self._first_due(st.added_at)
        self.participants[pid] = st
        return st

    def _first_due(self, now: float) -> tuple[int, float]:
        slot = self._choose_slot(None, speaker=False)
        return slot, self._slot_time_after(slot, now)

    def _choose_slot(self, me: ParticipantState | None, speaker: bool) -> int:
        """A slot for a participant of this kind (speaker or not): join the fullest group of the
        same kind that has room; else open the free slot farthest from the occupied ones; else
        (more than slots x group size participants) the least-loaded slot."""
        members: dict[int, list[ParticipantState]] = {}
        for other in self.participants.values():
            if other is not me:
                members.setdefault(other.slot, []).append(other)
        same = [
            k
            for k, group in members.items()
            if len(group) < self.group_size and all(o.speaker == speaker for o in group)
        ]
        if same:
            return max(same, key=lambda k: (len(members[k]), -k))
        free = [k for k in range(self.phase_slots) if k not in members]
        if free:
            if not members:
                return 0
            n = self.phase_slots
            return max(free, key=lambda k: (min(min((k - o) % n, (o - k) % n) for o in members), -k))
        return min(range(self.phase_slots), key=lambda k: (len(members.get(k, ())), k))

    def _consolidate(self, st: ParticipantState) -> None:
        """Move into a group of the same kind that is at least as large as this one (and has room).

        Groups shrink when members leave or change kind; merging small groups keeps one predictor
        call per group few. Moving only towards a group at least as large as one's own never
        oscillates.
        """
        sizes: dict[int, int] = {}
        for other in self.participants.values():
            if other is not st and other.speaker == st.speaker:
                sizes[other.slot] = sizes.get(other.slot, 0) + 1
        own = sizes.get(st.slot, 0) + 1
        targets = [
            k
            for k, n in sizes.items()
            if k != st.slot and n >= own and n < self.group_size and not self._mixed(k, st.speaker)
        ]
        if targets:
            st.slot = max(targets, key=lambda k: (sizes[k], -k))
            st.count("regrouped")

    def _mixed(self, slot: int, speaker: bool) -> bool:
        """Whether the slot holds a participant of the other kind."""
        return any(o.slot == slot and o.speaker != speaker for o in self.participants.values())

    def _slot_time_after(self, slot: int, t: float) -> float:
        """The first time strictly after ``t`` (by at most one period) on ``slot``'s phase."""
        offset = self.started_at + slot * self.interval / self.phase_slots
        k = math.floor((t - offset) / self.interval + 1e-6) + 1
        return offset + k * self.interval

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
            # The running speaker statistics are derived from the participant's voice: gone too.
            st.norm = self.features.new_normaliser()
            st.face_seq.clear()
            st.audio_seq.clear()
            st.audio_ring.clear()
            st.video_slot.clear()
            st.face_last_wall = None
            st.audio_emb_last_wall = None

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
        submitted together (see :class:`_Cohort`).
        """
        now = self.clock()
        cohort: _Cohort | None = None
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
            speaker = st.speech_last is not None and now - st.speech_last <= SPEECH_HOLD_S
            if speaker != st.speaker:
                # Regroup with participants of the new kind; the next step comes sooner, never later.
                st.speaker = speaker
                st.slot = self._choose_slot(st, speaker)
                st.count("regrouped")
            else:
                self._consolidate(st)
            st.next_due = self._slot_time_after(st.slot, due)
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
                behind = self._late_since_observe >= max(2, len(self.participants) // 4)
                self.throttle.observe(self.face_pool.depth, now, overloaded=behind)
                self._late_since_observe = 0
                cohort = _Cohort(self)
            task = asyncio.create_task(self._step(st, cohort), name=f"step-{st.pid}")
            self._steps.add(task)
            task.add_done_callback(self._steps.discard)

    @property
    def sampling_fps(self) -> float:
        return self.throttle.fps

    # -- one step --------------------------------------------------------------------------------

    async def _step(self, st: ParticipantState, cohort: _Cohort) -> None:
        try:
            await self._step_inner(st, cohort)
        except asyncio.CancelledError:
            raise
        except Exception:
            st.count("step_errors")
            log.exception("step for %s failed", st.pid)
        finally:
            st.step_running = False

    async def _step_inner(self, st: ParticipantState, cohort: _Cohort) -> None:
        start = self.clock()
        face_fut = self._sample_face(st, start)
        audio = self._submit_audio(st, start, cohort)
        # Steps with an audio window become ready together (one forward); the others do not wait for them.
        batch = cohort.infer_audio if audio is not None else cohort.infer_plain
        member = batch.join()
        try:
            if audio is not None:
                await self._finish_audio(st, *audio)
            if face_fut is not None and not face_fut.done():
                remaining = start + self.face_wait_s - self.clock()
                if remaining > 0:
                    await asyncio.wait({face_fut}, timeout=remaining)
                if not face_fut.done():
                    st.count("face_late")
            if self.participants.get(st.pid) is not st or not st.analysed:
                return
            # Freshness is judged at the step's start, on what had arrived by then (features carry
            # the start of the step that sampled them), never on how late the step finishes: a busy
            # engine must not turn a participant whose streams both flow into "voice only".
            face_active = self._face_active(st, start)
            audio_active = self._audio_active(st, start)
            if not (face_active or audio_active):
                st.profile = None
                return
            xf, xa, fm, am = assemble_inputs(st.face_seq, st.audio_seq, face_active, audio_active, st.norm)
            st.inference_in_flight += 1
            try:
                pred = await batch.add(member, InferenceJob(st.pid, xf, xa, fm, am))
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
        self._emit(st, pred, face_active, audio_active)

    def _sample_face(self, st: ParticipantState, now: float) -> asyncio.Future[FaceOutput] | None:
        """Take the newest frame for the face pool, if the camera is live and the throttle allows."""
        if not (st.camera_on and st.analysed):
            return None
        if not stream_fresh(True, st.video_last_wall, now, self.config.modality_stale_s):
            return None
        # Credit: fps x period per step, one frame per unit; at the ceiling every step samples.
        st.face_credit = min(1.0, st.face_credit + self.throttle.fps * self.interval)
        if st.face_credit < 1.0 - 1e-9:
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
        st.face_credit -= 1.0
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
            return
        out = fut.result()
        if out.vector is None:
            st.count(f"face_{out.reason or 'none'}")
            return
        if not (st.camera_on and st.analysed):
            return
        media_time = job.media_time if out.media_time is None else out.media_time
        st.face_seq.append(out.vector, media_time)
        st.face_last_wall = sampled_at  # the step that took the frame, however late the face came back
        st.face_last_media = media_time
        st.face_last_captured = job.wall_time if out.wall_time is None else out.wall_time
        st.count("faces")

    def _submit_audio(
        self, st: ParticipantState, now: float, cohort: _Cohort
    ) -> tuple[asyncio.Future[AudioOutput], Any, float] | None:
        """Queue the newest 0.6 s window, unless the stream is stale, too short or digital silence."""
        if not (st.mic_on and st.analysed) or not self._audio_stream_live(st, now):
            return None
        if len(st.audio_ring) < self.features.min_audio_samples:
            return None
        window = st.audio_ring.window(self.features.window_samples)
        if float(np.std(window.samples)) < SILENCE_STD:
            st.count("audio_silent")
            self._count("audio_silent")
            return None
        fut = cohort.audio.add(
            cohort.audio.join(), AudioJob(st.pid, window.samples, window.end_media_time, window.end_wall_time)
        )
        st.audio_in_flight += 1
        return fut, window, now

    async def _finish_audio(
        self, st: ParticipantState, fut: asyncio.Future[AudioOutput], window: Any, sampled_at: float
    ) -> None:
        try:
            out = await fut
        except asyncio.CancelledError:
            raise
        except (PoolFull, PoolClosed):
            st.count("audio_dropped")
            self._count("audio_dropped")
            return
        except Exception:
            st.count("audio_errors")
            return
        finally:
            st.audio_in_flight -= 1
        if self.participants.get(st.pid) is not st or not st.mic_on or not st.analysed:
            return
        st.speech_prob = out.speech_prob
        if out.vector is not None:
            st.speech_last = self.clock()
        if out.vector is None:
            # Gated by the VAD: no embedding, so the audio modality ages like a dropped stream.
            st.count("vad_gated")
            self._count("vad_gated")
            return
        st.norm.observe_audio(out.vector)
        st.audio_seq.append(out.vector, window.end_media_time)
        st.audio_emb_last_wall = sampled_at  # the step that took the window (see _step_inner)
        st.audio_emb_media = window.end_media_time
        st.audio_emb_captured = window.end_wall_time
        st.count("audio_embedded")

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
            self.interval,
        )

    # -- results ---------------------------------------------------------------------------------

    def _emit(self, st: ParticipantState, pred: Any, face_active: bool, audio_active: bool) -> None:
        now = self.clock()
        wall = self.wall_clock()
        # The newest frame used: its receive time and its own stream's media time, as a pair.
        used: list[tuple[float, float]] = []
        if face_active:
            used.append((st.face_last_captured, st.face_last_media))
        if audio_active:
            used.append((st.audio_emb_captured, st.audio_emb_media))
        newest_captured, newest_media = max(used) if used else (wall, None)
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
            media_time=newest_media,
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
        lat = np.asarray(st.latencies_ms, dtype=np.float64)
        drops = {k: v for k, v in st.counters.items() if k.endswith("_dropped") or k == "frames_skipped"}
        return {
            "participantId": st.pid,
            "name": st.name,
            "role": st.role,
            "profile": st.profile,
            "profilesSeen": sorted(st.profiles_seen),
            "mic": st.mic_on,
            "camera": st.camera_on,
            "analysed": st.analysed,
            "phaseSlot": st.slot,
            "samplingFps": round(self.throttle.fps, 3),
            "sampledFps": _rate(st.sample_times, now),
            "queues": {
                "face": st.face_in_flight,
                "audio": st.audio_in_flight,
                "inference": st.inference_in_flight,
            },
            "faceInFlight": st.face_in_flight,
            "faceSeq": len(st.face_seq),
            "audioSeq": len(st.audio_seq),
            "speechProb": None if st.speech_prob is None else round(st.speech_prob, 3),
            "vadGated": st.counters.get("vad_gated", 0),
            "drops": drops,
            "resultsPerSecond": _rate(st.result_times, now),
            "reducedRate": self._below_target(st, now),
            "latencyMs": _percentiles(lat),
            "counters": dict(st.counters),
        }

    def _below_target(self, st: ParticipantState, now: float) -> bool:
        """Analysed, with a live modality, present for a whole rate window, yet under 90 % of the
        step rate: the engine is throttling or skipping this participant's steps."""
        if not st.analysed or st.profile is None or now - st.added_at < RATE_WINDOW_S:
            return False
        return _rate(st.result_times, now) < BELOW_TARGET * (1.0 / self.interval)

    def snapshot(self) -> dict[str, Any]:
        t = self.throttle
        participants = [self.participant_stats(st) for st in self.participants.values()]
        return {
            "participants": participants,
            "participantsBelowTarget": sum(1 for p in participants if p["reducedRate"]),
            "targetResultsPerSecond": round(1.0 / self.interval, 3),
            "queues": {
                "face": self.face_pool.depth,
                "audio": self.audio_pool.depth,
                "inference": self.inference_pool.depth,
            },
            "pools": {
                "face": self.face_pool.snapshot(),
                "audio": self.audio_pool.snapshot(),
                "inference": self.inference_pool.snapshot(),
            },
            "samplingFps": t.fps,
            "throttle": {
                "fps": round(t.fps, 3),
                "ceilingFps": round(t.target_fps, 3),
                "floorFps": t.min_fps,
                "queueLimit": t.queue_limit,
                "throttled": t.throttled,
                "decreases": t.decreases,
                "recoveries": t.recoveries,
                "events": [e.to_dict() for e in list(t.events)[-20:]],
            },
            "vad": {"enabled": self.vad_enabled, "threshold": self.config.vad_threshold},
            "counters": dict(self.counters),
        }


class _Batch:
    """Requests of one cohort for one pool, submitted together in one ``submit_many``.

    Members ``join`` when their step starts (synchronously, so every member of a cohort has joined
    before any of them can be ready), then either ``add`` a request or ``leave``. The batch goes out
    once every member is accounted for, or ``hold_s`` after the first request, whichever is first;
    after the hold, late requests go out on their own. The check runs one loop turn after a change,
    so members that become ready in the same turn share the batch.
    """

    def __init__(self, pool: BatchWorkerPool[Any, Any], hold_s: float) -> None:
        self.pool = pool
        self.hold_s = hold_s
        self.members = 0
        self.accounted: set[int] = set()
        self.items: list[tuple[Any, asyncio.Future[Any]]] = []
        self.expired = False
        self._check_soon = False
        self._timer: asyncio.TimerHandle | None = None

    def join(self) -> int:
        self.members += 1
        return self.members

    def add(self, member: int, request: Any) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.items.append((request, fut))
        self.accounted.add(member)
        self._schedule()
        return fut

    def leave(self, member: int) -> None:
        if member not in self.accounted:
            self.accounted.add(member)
            self._schedule()

    def _schedule(self) -> None:
        if not self._check_soon:
            self._check_soon = True
            asyncio.get_running_loop().call_soon(self._check)

    def _check(self) -> None:
        self._check_soon = False
        if not self.items:
            return
        if self.expired or len(self.accounted) >= self.members:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.hold_s, self._expire)

    def _expire(self) -> None:
        self._timer = None
        self.expired = True
        self._flush()

    def _flush(self) -> None:
        if self._timer is not None and len(self.accounted) >= self.members:
            self._timer.cancel()
            self._timer = None
        items, self.items = [(r, f) for r, f in self.items if not f.done()], []
        if not items:
            return
        try:
            futs = self.pool.submit_many([r for r, _ in items])
        except (PoolFull, PoolClosed) as exc:
            for _, fut in items:
                fut.set_exception(type(exc)(str(exc)))
            return
        for (_, fut), pool_fut in zip(items, futs, strict=True):
            pool_fut.add_done_callback(functools.partial(_chain, dst=fut))


class _Cohort:
    """The steps one tick started: one audio batch, and two predictor batches (steps that wait for
    an audio window become ready later than steps that do not, so they do not hold them up)."""

    def __init__(self, engine: Engine) -> None:
        self.audio = _Batch(engine.audio_pool, engine.batch_hold_s)
        self.infer_audio = _Batch(engine.inference_pool, engine.batch_hold_s)
        self.infer_plain = _Batch(engine.inference_pool, engine.batch_hold_s)


def _chain(src: asyncio.Future[Any], *, dst: asyncio.Future[Any]) -> None:
    if dst.done():
        return
    if src.cancelled():
        dst.cancel()
    elif src.exception() is not None:
        dst.set_exception(src.exception())  # type: ignore[arg-type]
    else:
        dst.set_result(src.result())


def _is_frame(frame: Any) -> bool:
    """A decoded picture the face stage can convert (checked by type only: cheap, on the loop)."""
    return isinstance(frame, np.ndarray) or hasattr(frame, "to_ndarray")


def _rate(times: deque[float], now: float) -> float:
    """Events per second over the last RATE_WINDOW_S, from the event times."""
    recent = [t for t in times if now - t <= RATE_WINDOW_S]
    if len(recent) < 2:
        return 0.0
    span = recent[-1] - recent[0]
    return round((len(recent) - 1) / span, 3) if span > 0 else 0.0


def _percentiles(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    return {
        "n": int(values.size),
        "p50": round(float(np.percentile(values, 50)), 1),
        "p95": round(float(np.percentile(values, 95)), 1),
        "max": round(float(values.max()), 1),
    }
