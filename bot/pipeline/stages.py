"""The three compute stages the executor pools run: face features, audio features, inference.

Each stage is a ``process(state, requests) -> results`` function plus the ``init`` that builds
its per-thread state. They run on pool threads, never on the asyncio loop: frame conversion to
RGB happens here too, so the loop only moves frame references.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bot.pipeline.intraop import IntraOpThreads
from bot.pipeline.slots import FrameItem
from models.extractors import AudioExtractor, FaceExtractor
from models.family import BatchPredictor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaceJob:
    """A frame to analyse, or (``source``) where to take the newest frame when a thread is free.

    With a ``source`` the face thread takes the frame at the moment it starts the job, so a job
    that waited in the queue still analyses the newest frame, not the one current at submission.
    """

    participant_id: str
    frame: Any  # av.VideoFrame or an RGB ndarray; None when ``source`` supplies it
    media_time: float
    wall_time: float
    source: Callable[[], FrameItem | None] | None = None


@dataclass(frozen=True)
class FaceOutput:
    """The face vector (or why none) and the media/wall time of the frame it came from."""

    vector: np.ndarray | None
    reason: str | None
    media_time: float | None = None
    wall_time: float | None = None


@dataclass(frozen=True)
class AudioJob:
    participant_id: str
    samples: np.ndarray  # float32 16 kHz mono, the window to embed
    media_time: float
    wall_time: float


@dataclass(frozen=True)
class AudioOutput:
    """An embedding, or ``vector=None`` with why: ``no_speech`` when the VAD gated the window."""

    vector: np.ndarray | None
    reason: str | None
    speech_prob: float | None = None


@dataclass(frozen=True)
class InferenceJob:
    participant_id: str
    xf: np.ndarray
    xa: np.ndarray
    fm: np.ndarray
    am: np.ndarray


def frame_to_rgb(frame: Any) -> np.ndarray:
    """Convert a decoded frame to RGB uint8; done on the face thread, only for sampled frames."""
    if isinstance(frame, np.ndarray):
        return frame
    return np.asarray(frame.to_ndarray(format="rgb24"))


def face_stage(
    make_extractor: Callable[[], FaceExtractor],
) -> tuple[Callable[[], FaceExtractor], Callable[[FaceExtractor], None], Any]:
    """(init, teardown, process) for the face pool: one landmarker per thread."""

    def init() -> FaceExtractor:
        return make_extractor()

    def teardown(extractor: FaceExtractor) -> None:
        close = getattr(extractor, "close", None)
        if close is not None:
            close()

    def process(extractor: FaceExtractor, jobs: Sequence[FaceJob]) -> list[FaceOutput]:
        out: list[FaceOutput] = []
        for job in jobs:
            frame, media_time, wall_time = job.frame, job.media_time, job.wall_time
            if job.source is not None:
                item = job.source()
                if item is not None:
                    frame, media_time, wall_time = item
            if frame is None:
                out.append(FaceOutput(None, "no_frame"))
                continue
            try:
                rgb = frame_to_rgb(frame)
            except Exception as exc:  # an undecodable or malformed frame harms only itself
                log.warning("face: frame of %s could not be converted: %s", job.participant_id, exc)
                out.append(FaceOutput(None, "bad_frame", media_time, wall_time))
                continue
            result = extractor.extract(rgb)
            out.append(FaceOutput(result.vector, result.reason, media_time, wall_time))
        return out

    return init, teardown, process


def audio_stage_init(vad_threshold: float | None, make_detector: Callable[[], Any] | None = None) -> Callable[[], Any]:
    """Per-thread state of the audio pool: a speech detector, or None when gating is off.

    ``make_detector`` (tests inject fakes) defaults to Silero VAD at ``vad_threshold``.
    """

    def init() -> Any:
        if vad_threshold is None:
            return None
        if make_detector is not None:
            return make_detector()
        from models.vad import SpeechDetector

        return SpeechDetector(vad_threshold)

    return init


def audio_stage(
    embedder: AudioExtractor, intra_op: IntraOpThreads | None = None
) -> Callable[[Any, Sequence[AudioJob]], list[AudioOutput]]:
    """Process function for the audio pool: VAD, then one batched Wav2Vec2 forward for the speech.

    ``state`` is the thread's speech detector (see :func:`audio_stage_init`) or None: with a
    detector, windows without speech are answered ``AudioOutput(None, "no_speech", p)`` and never
    reach Wav2Vec2; the rest of the batch is embedded in one forward.

    The torch model is shared by the audio threads: an eval-mode forward under inference_mode
    mutates nothing, and a second copy of a 12-layer large model would cost ~800 MB.
    ``intra_op`` (the engine's choice of torch threads, :mod:`bot.pipeline.intraop`) is applied
    before each forward.
    """

    def process(detector: Any, jobs: Sequence[AudioJob]) -> list[AudioOutput]:
        if not jobs:
            return []
        probs: list[float | None] = [None] * len(jobs)
        keep = list(range(len(jobs)))
        if detector is not None:
            mask, p = detector.is_speech([job.samples for job in jobs])
            probs = [float(x) for x in p]
            keep = [i for i in range(len(jobs)) if bool(mask[i])]
        out = [AudioOutput(None, "no_speech", probs[i]) for i in range(len(jobs))]
        if keep:
            if intra_op is not None:
                intra_op.apply()
            vectors = embedder.embed([jobs[i].samples for i in keep])
            for i, v in zip(keep, vectors, strict=True):
                out[i] = AudioOutput(np.asarray(v, dtype=np.float32), None, probs[i])
        return out

    return process


def inference_stage(predictor: BatchPredictor) -> Callable[[Any, Sequence[InferenceJob]], list[Any]]:
    """Process function for the single inference thread: one batched predictor call per step.

    Only this thread ever touches the predictor, so its model state needs no locks.
    """
    owner: list[int] = []

    def process(_state: Any, jobs: Sequence[InferenceJob]) -> list[Any]:
        ident = threading.get_ident()
        if not owner:
            owner.append(ident)
        elif owner[0] != ident:
            raise RuntimeError("the predictor must be driven by one inference thread")
        if not jobs:
            return []
        xf = np.stack([j.xf for j in jobs])
        xa = np.stack([j.xa for j in jobs])
        fm = np.stack([j.fm for j in jobs])
        am = np.stack([j.am for j in jobs])
        return list(predictor.predict_batch(xf, xa, fm, am))

    return process
