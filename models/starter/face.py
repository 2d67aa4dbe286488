"""The starter family's face extractor: MediaPipe landmarks → aligned 64x64 crop → mini-Xception (FER2013).

Per frame: one MediaPipe FaceLandmarker (the reference extractor's options, shared through
:class:`models.face.LandmarkerHolder`) finds the face mesh; :func:`models.starter.face_crop.aligned_face_crop`
levels the eyes and cuts a FER2013-like square; the converted mini-Xception gives the 7 FER2013
probabilities, which are the frame's face vector (``dim = 7``, in :data:`FER_CLASSES` order). The
predictor maps them to our six classes with :func:`fer_to_six`.

This module imports only numpy at import time (the registry reads :data:`FER_CLASSES` when a
manifest is checked); torch, OpenCV and MediaPipe load when an extractor is created.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np

from models.constants import CLASS_NAMES
from models.face import FaceResult, LandmarkerHolder, validate_rgb

if TYPE_CHECKING:
    from models.starter.minixception import MiniXception

FER_CLASSES: Final[tuple[str, ...]] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FER_DIM: Final[int] = len(FER_CLASSES)

# FER index of each of our classes, in CLASS_NAMES order (surprise has no counterpart).
_FER_FOR_CLASS: Final[dict[str, str]] = {
    "angry": "angry",
    "fearful": "fear",
    "disgust": "disgust",
    "happy": "happy",
    "sad": "sad",
    "neutral/calm": "neutral",
}
FER_TO_SIX_INDEX: Final[tuple[int, ...]] = tuple(FER_CLASSES.index(_FER_FOR_CLASS[c]) for c in CLASS_NAMES)


def fer_to_six(p7: np.ndarray) -> np.ndarray:
    """FER2013 probabilities (..., 7) → our six classes (..., 6) in ``CLASS_NAMES`` order, float32.

    Surprise is dropped and the other six renormalised to sum to 1: our taxonomy has no surprise
    class (RAVDESS "surprised" clips are dropped from training too), so its mass says nothing about
    which of our classes a face shows; renormalising keeps the relative odds of the remaining six.
    FER "neutral" maps to "neutral/calm", "fear" to "fearful". A row whose six kept probabilities
    are all zero (everything on surprise) becomes uniform.
    """
    p = np.asarray(p7, dtype=np.float32)
    if p.shape[-1] != FER_DIM:
        raise ValueError(f"expected (..., {FER_DIM}) FER probabilities, got shape {p.shape}")
    six = p[..., list(FER_TO_SIX_INDEX)]
    total = six.sum(axis=-1, keepdims=True)
    safe = np.where(total > 0, total, np.float32(1.0))
    out: np.ndarray = np.where(total > 0, six / safe, np.float32(1.0 / len(CLASS_NAMES))).astype(np.float32)
    return out


class FerFaceExtractor(LandmarkerHolder):
    """One MediaPipe FaceLandmarker + the aligned crop + mini-Xception: RGB frame → 7 FER probabilities.

    **Not thread-safe**: the MediaPipe graph must not be driven from two threads at once (and the
    torch module is not meant to be shared either), so create one instance per face-pool thread,
    as :func:`models.extractors.face_extractor_factory` does. ``stats`` counts frames and outcomes.
    The network runs on torch's process-wide intra-op threads, which :mod:`bot.runtime` sets from
    the engine's ``torch_threads``: the pools provide the parallelism, and extra torch threads only
    spin (measured on a busy 2-core machine: ~5 ms per 64x64 forward pass with 1 thread, ~250 ms
    with torch's default 2).
    """

    dim: Final[int] = FER_DIM

    def __init__(self, asset_path: Path | str | None = None, *, weights_path: Path | str) -> None:
        from models.starter.minixception import load_minixception

        self.weights_path = Path(weights_path)
        self.model: MiniXception = load_minixception(self.weights_path)
        if self.model.classes and tuple(self.model.classes) != FER_CLASSES:
            raise ValueError(f"{self.weights_path}: classes {self.model.classes} are not {FER_CLASSES}")
        super().__init__(asset_path)

    def landmarks_px(self, rgb: np.ndarray) -> np.ndarray | None:
        """MediaPipe's first face mesh in pixel coordinates (x·W, y·H), (478, 2) float32, or ``None``.

        Raises ``ValueError`` for input that is not RGB uint8 (:meth:`extract` reports it instead).
        """
        landmarker = self._live_landmarker()
        problem = validate_rgb(rgb)
        if problem is not None:
            raise ValueError(problem)
        import mediapipe as mp

        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        result = landmarker.detect(image)
        if not result.face_landmarks:
            return None
        h, w = rgb.shape[:2]
        return np.array([(p.x * w, p.y * h) for p in result.face_landmarks[0]], dtype=np.float32)

    def extract(self, rgb: np.ndarray) -> FaceResult:
        """7 FER probabilities (float32, sum 1) for one RGB uint8 frame; bad input/no face as reasons."""
        self._live_landmarker()
        from models.starter.face_crop import aligned_face_crop

        self.stats["frames"] += 1
        problem = validate_rgb(rgb)
        if problem is not None:
            self.stats["bad_input"] += 1
            return FaceResult(None, "bad_input", problem)
        landmarks = self.landmarks_px(rgb)
        if landmarks is None:
            self.stats["no_face"] += 1
            return FaceResult(None, "no_face", "MediaPipe found no face")
        crop = aligned_face_crop(rgb, landmarks)
        self.stats["faces"] += 1
        return FaceResult(self.model.predict_proba(crop[None])[0])
