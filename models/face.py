"""Face embedding: MediaPipe FaceLandmarker → 326 floats per frame (docs/features.md, "Face: 326 floats per frame").

Layout: ``[0:272]`` 136 selected landmarks as interleaved (x, y), translated to the nose tip
(mesh 1), rotated so the eye line (mesh 33 → 263) is horizontal and divided by the face width
‖p234 − p454‖ + 1e-6 (the original's doc says inter-ocular, its code uses the cheek points, and the
trained models expect the code); ``[272:323]`` 51 ARKit blendshapes in alphabetical order;
``[323:326]`` pitch, yaw, roll from the facial transformation matrix, clipped to [−1, 1].

The post-processing is a pure function (:func:`face_vector_from_mediapipe`) so that it can be
checked against the golden raw MediaPipe outputs independently of MediaPipe's numerics. It computes
in float32 throughout: that reproduces the golden vectors bit for bit, whereas float64 arithmetic
differs by up to ~1.2e-7 (measured on all 17 golden faces).
"""

from __future__ import annotations

import atexit
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

import numpy as np

from models.assets import locate_face_asset
from models.constants import FACE_DIM

if TYPE_CHECKING:
    from mediapipe.tasks.python.vision import FaceLandmarker

FACE_LANDMARK_INDICES: Final[tuple[int, ...]] = (
    10, 152, 234, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 148, 33, 7, 163, 144, 145, 153,
    154, 155, 133, 173, 157, 158, 159, 160, 161, 246, 362, 382, 381, 380, 374, 373, 390, 249, 263, 466,
    388, 387, 386, 385, 384, 398, 70, 63, 105, 66, 107, 55, 65, 52, 53, 46, 300, 293, 334, 296,
    336, 285, 295, 282, 283, 276, 1, 2, 98, 327, 168, 197, 195, 5, 4, 45, 220, 115, 48, 61,
    185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146, 78,
    191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95, 116,
    123, 147, 213, 192, 214, 210, 345, 352, 376, 433, 416, 434, 430, 151, 9, 8,
)  # fmt: skip

BLENDSHAPE_NAMES_51: Final[tuple[str, ...]] = (
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff",
    "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft",
    "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight",
    "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight",
    "jawForward", "jawLeft", "jawOpen", "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight",
    "mouthFrownLeft", "mouthFrownRight", "mouthFunnel", "mouthLeft", "mouthLowerDownLeft",
    "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight", "mouthPucker", "mouthRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft",
    "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight",
)  # fmt: skip

NUM_MESH_POINTS: Final[int] = 478
LANDMARK_DIM: Final[int] = 2 * len(FACE_LANDMARK_INDICES)  # 272
BLENDSHAPE_DIM: Final[int] = len(BLENDSHAPE_NAMES_51)  # 51
POSE_DIM: Final[int] = 3

# Positions inside FACE_LANDMARK_INDICES (not mesh indices) of the reference points.
_NOSE: Final[int] = FACE_LANDMARK_INDICES.index(1)
_EYE_LEFT: Final[int] = FACE_LANDMARK_INDICES.index(33)
_EYE_RIGHT: Final[int] = FACE_LANDMARK_INDICES.index(263)
_CHEEK_LEFT: Final[int] = FACE_LANDMARK_INDICES.index(234)
_CHEEK_RIGHT: Final[int] = FACE_LANDMARK_INDICES.index(454)
_SCALE_EPS: Final[float] = 1e-6
_MIN_CONFIDENCE: Final[float] = 0.2

assert LANDMARK_DIM + BLENDSHAPE_DIM + POSE_DIM == FACE_DIM


def normalised_landmarks(landmarks_xy: np.ndarray) -> np.ndarray:
    """Select the 136 landmarks and translate, rotate and scale them; returns (272,) float32."""
    mesh = np.asarray(landmarks_xy)
    if mesh.ndim != 2 or mesh.shape[0] < NUM_MESH_POINTS or mesh.shape[1] < 2:
        raise ValueError(f"expected (478, 2|3) landmarks, got shape {mesh.shape}")
    pts = mesh[list(FACE_LANDMARK_INDICES), :2].astype(np.float32)
    pts = pts - pts[_NOSE]
    eye_vec = pts[_EYE_RIGHT] - pts[_EYE_LEFT]
    theta = -np.arctan2(eye_vec[1], eye_vec[0])
    cos, sin = np.cos(theta), np.sin(theta)
    rotation = np.array([[cos, -sin], [sin, cos]], dtype=np.float32)
    pts = pts @ rotation.T
    scale = np.linalg.norm(pts[_CHEEK_LEFT] - pts[_CHEEK_RIGHT]) + np.float32(_SCALE_EPS)
    return (pts / scale).reshape(-1).astype(np.float32)


def blendshape_vector(blendshapes: Mapping[str, float] | None) -> np.ndarray:
    """The 51 ARKit scores in alphabetical order by name; absent names (or no mapping) give 0."""
    scores = blendshapes or {}
    return np.array([scores.get(name, 0.0) for name in BLENDSHAPE_NAMES_51], dtype=np.float32)


def head_pose(matrix: np.ndarray | None) -> np.ndarray:
    """(pitch, yaw, roll) in radians, clipped to [−1, 1], from the 4×4 transformation matrix.

    The clip is the original's: it saturates real head turns beyond ~57°, which the trained
    models have only ever seen clipped.
    """
    if matrix is None:
        return np.zeros(POSE_DIM, dtype=np.float32)
    m = np.asarray(matrix, dtype=np.float32)
    if m.shape != (4, 4):
        raise ValueError(f"expected a 4x4 transformation matrix, got shape {m.shape}")
    sy = np.sqrt(m[0, 0] * m[0, 0] + m[1, 0] * m[1, 0])
    pose = np.array(
        [np.arctan2(-m[2, 1], m[2, 2]), np.arctan2(m[2, 0], sy), np.arctan2(m[1, 0], m[0, 0])],
        dtype=np.float32,
    )
    return np.clip(pose, -1.0, 1.0).astype(np.float32)


def face_vector_from_mediapipe(
    landmarks_xy: np.ndarray,
    blendshapes: Mapping[str, float] | None,
    matrix: np.ndarray | None,
) -> np.ndarray:
    """Build the 326-d face vector from raw MediaPipe outputs (pure post-processing, float32)."""
    return np.concatenate(
        [normalised_landmarks(landmarks_xy), blendshape_vector(blendshapes), head_pose(matrix)]
    ).astype(np.float32)


@dataclass(frozen=True)
class FaceResult:
    """Outcome of one frame: a vector, or ``None`` with a machine-readable reason.

    ``reason`` is ``"no_face"`` or ``"bad_input"``; ``detail`` is a human-readable explanation.
    """

    vector: np.ndarray | None
    reason: str | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.vector is not None


def validate_rgb(rgb: Any) -> str | None:
    """Return why ``rgb`` is not an HxWx3 uint8 image, or ``None`` when it is acceptable."""
    if not isinstance(rgb, np.ndarray):
        return f"expected a numpy array, got {type(rgb).__name__}"
    if rgb.dtype != np.uint8:
        return f"expected dtype uint8, got {rgb.dtype}"
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        return f"expected shape (H, W, 3), got {rgb.shape}"
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        return f"empty image {rgb.shape}"
    return None


def _create_landmarker(asset_path: Path) -> FaceLandmarker:
    """The original's options: IMAGE mode, one face, blendshapes and matrix on, confidences 0.2."""
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(asset_path)),
        running_mode=vision.RunningMode.IMAGE,
        num_faces=1,
        min_face_detection_confidence=_MIN_CONFIDENCE,
        min_face_presence_confidence=_MIN_CONFIDENCE,
        min_tracking_confidence=_MIN_CONFIDENCE,
        output_face_blendshapes=True,
        output_facial_transformation_matrixes=True,
    )
    return vision.FaceLandmarker.create_from_options(options)


class LandmarkerHolder:
    """Owns one MediaPipe FaceLandmarker: created with the original's options, closed once.

    Closing is idempotent and also happens at interpreter exit for instances nobody closed (e.g.
    thread-local ones), before MediaPipe's own teardown. Both face extractors build on it.
    """

    def __init__(self, asset_path: Path | str | None = None) -> None:
        self.asset_path: Path = locate_face_asset(asset_path)
        self._landmarker: FaceLandmarker | None = _create_landmarker(self.asset_path)
        self.stats: dict[str, int] = {"frames": 0, "faces": 0, "no_face": 0, "bad_input": 0}
        _LIVE_EXTRACTORS.add(self)

    def _live_landmarker(self) -> FaceLandmarker:
        if self._landmarker is None:
            raise RuntimeError(f"{type(self).__name__} is closed")
        return self._landmarker

    def close(self) -> None:
        """Release the MediaPipe graph; idempotent and safe to call at interpreter exit."""
        landmarker, self._landmarker = self._landmarker, None
        if landmarker is None:
            return
        _LIVE_EXTRACTORS.discard(self)
        close_landmarker(landmarker)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class FaceFeatureExtractor(LandmarkerHolder):
    """One MediaPipe FaceLandmarker plus the post-processing of docs/features.md, "Face: 326 floats per frame".

    **Not thread-safe, by design**: a MediaPipe task graph must not be driven from two threads at
    once, so create one instance per face-executor thread (see :func:`thread_local_extractor`).
    IMAGE mode is used (as in the original) so that every frame is independent: there is no
    tracking state to reset when frames are dropped or participants change.
    """

    def extract(self, rgb: np.ndarray) -> FaceResult:
        """Embed one RGB uint8 frame; invalid input yields reason ``"bad_input"`` instead of raising."""
        landmarker = self._live_landmarker()
        self.stats["frames"] += 1
        problem = validate_rgb(rgb)
        if problem is not None:
            self.stats["bad_input"] += 1
            return FaceResult(None, "bad_input", problem)
        import mediapipe as mp

        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        result = landmarker.detect(image)
        if not result.face_landmarks:
            self.stats["no_face"] += 1
            return FaceResult(None, "no_face", "MediaPipe found no face")
        self.stats["faces"] += 1
        return FaceResult(_vector_from_result(result))


def close_landmarker(landmarker: FaceLandmarker) -> None:
    """Close a MediaPipe landmarker, also at interpreter exit.

    MediaPipe 1.2.3 runs every C call on its own executor thread, which Python has already shut down
    at exit ("cannot schedule new futures after shutdown"). The process is ending, so drop the
    handle: otherwise MediaPipe's __del__ retries and prints a traceback.
    """
    try:
        landmarker.close()
    except RuntimeError:
        landmarker._handle = None


def _vector_from_result(result: Any) -> np.ndarray:
    """Convert a FaceLandmarkerResult's first face to the 326-d vector."""
    landmarks = np.array([(p.x, p.y) for p in result.face_landmarks[0]], dtype=np.float32)
    blendshapes = None
    if result.face_blendshapes:
        blendshapes = {c.category_name: float(c.score) for c in result.face_blendshapes[0]}
    matrix = None
    if result.facial_transformation_matrixes:
        matrix = np.asarray(result.facial_transformation_matrixes[0], dtype=np.float32)
    return face_vector_from_mediapipe(landmarks, blendshapes, matrix)


_THREAD_STATE = threading.local()
_LIVE_EXTRACTORS: weakref.WeakSet[LandmarkerHolder] = weakref.WeakSet()


@atexit.register
def _close_live_extractors() -> None:
    """Close extractors nobody closed (e.g. thread-local ones) before MediaPipe's own teardown."""
    for extractor in list(_LIVE_EXTRACTORS):
        extractor.close()


def thread_local_extractor(asset_path: Path | str | None = None) -> FaceFeatureExtractor:
    """Return the calling thread's extractor for ``asset_path``, creating it on first use.

    Executor threads call this per task: each thread gets its own landmarker (MediaPipe graphs are
    not thread-safe) and keeps it for its lifetime, so the ~100 ms graph start-up is paid once.
    """
    key = locate_face_asset(asset_path).resolve()
    extractors: dict[Path, FaceFeatureExtractor] | None = getattr(_THREAD_STATE, "extractors", None)
    if extractors is None:
        extractors = {}
        _THREAD_STATE.extractors = extractors
    extractor = extractors.get(key)
    if extractor is None:
        extractor = FaceFeatureExtractor(key)
        extractors[key] = extractor
    return extractor


def close_thread_local_extractors() -> None:
    """Close the calling thread's extractors (call from a pool's thread before it exits)."""
    extractors: dict[Path, FaceFeatureExtractor] = getattr(_THREAD_STATE, "extractors", {})
    for extractor in extractors.values():
        extractor.close()
    extractors.clear()
