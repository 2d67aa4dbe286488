"""Anomaly detection: the 9,452-d feature vector and the per-profile IsolationForest detectors.

Feature layout (docs/training.md, "Anomaly detectors", the original's ``train_anomaly.build_anomaly_features``),
over the valid
frames (mask == 1, ``n`` of them) of the normalised sequences, float32:

* per modality (face D=326, then audio D=1024): mean | std (0 if n < 2) | min | max |
  IQR = P75 − P25 (numpy linear percentiles, 0 if n < 3) | ratio n/T (one scalar) |
  jitter = std of first differences (0 if n < 3); the whole ``6D + 1`` block is 0 if n = 0;
* then the deltas last − first valid frame (0 if n < 2): face (326), audio (1024).

Unlike the tabular vector, absent blocks are zeros, not NaN (the scaler and PCA need finite input).

Detectors (one per profile plus a global fallback) are the original's ``ModalityAnomalyModel`` at
inference, where no actor id exists: global ``StandardScaler`` → optional ``PCA`` →
``IsolationForest.decision_function``; anomalous iff score < threshold. The scaler and PCA run in
float32 exactly as scikit-learn 1.9.1 runs them on float32 input (``mean_``/``scale_`` cast to float32
before subtracting/dividing; ``X @ components_.T − mean_ @ components_.T``), and the forest is the
vectorised :class:`~models.forest.IsolationForestArrays`, so no scikit-learn object is needed at
serving time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from models.constants import ANOMALY_DIM, ANOMALY_FEATURE_VERSION, AUDIO_DIM, FACE_DIM, PROFILES
from models.forest import IsolationForestArrays
from models.tabular import as_sequence_batch, iter_valid_groups

__all__ = [
    "DETECTOR_NAMES",
    "GLOBAL_FALLBACK",
    "AnomalyDetector",
    "AnomalyModel",
    "AnomalyResult",
    "build_anomaly_features",
    "profile_from_masks",
    "profiles_from_masks",
]

GLOBAL_FALLBACK: Final[str] = "global_fallback"
DETECTOR_NAMES: Final[tuple[str, ...]] = (*PROFILES, GLOBAL_FALLBACK)

_FACE_BLOCK = 6 * FACE_DIM + 1  # 1957
_AUDIO_BLOCK = 6 * AUDIO_DIM + 1  # 6145
OFF_FACE = 0
OFF_AUDIO = _FACE_BLOCK
OFF_FACE_DELTA = _FACE_BLOCK + _AUDIO_BLOCK  # 8102
OFF_AUDIO_DELTA = OFF_FACE_DELTA + FACE_DIM  # 8428
assert OFF_AUDIO_DELTA + AUDIO_DIM == ANOMALY_DIM


# ---------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------


def _modality_block(out: np.ndarray, x: np.ndarray, valid: np.ndarray, off: int, off_delta: int) -> None:
    """Fill one modality's aggregate block and delta block (rows with n = 0 stay zero)."""
    d = x.shape[2]
    seq_len = valid.shape[1]
    for g in iter_valid_groups(x, valid):
        if g.n == 0:
            continue
        r, v = g.rows, g.frames
        out[r, off : off + d] = v.mean(axis=1)
        if g.n > 1:
            out[r, off + d : off + 2 * d] = v.std(axis=1)
        out[r, off + 2 * d : off + 3 * d] = v.min(axis=1)
        out[r, off + 3 * d : off + 4 * d] = v.max(axis=1)
        if g.n >= 3:
            q75 = np.percentile(v, 75, axis=1)
            q25 = np.percentile(v, 25, axis=1)
            out[r, off + 4 * d : off + 5 * d] = (q75 - q25).astype(np.float32)
            out[r, off + 5 * d + 1 : off + 6 * d + 1] = np.diff(v, axis=1).std(axis=1)
        out[r, off + 5 * d] = np.float32(g.n / seq_len)
        if g.n >= 2:
            out[r, off_delta : off_delta + d] = v[:, -1] - v[:, 0]


def build_anomaly_features(xf: npt.ArrayLike, xa: npt.ArrayLike, fm: npt.ArrayLike, am: npt.ArrayLike) -> np.ndarray:
    """Build the 9,452-d anomaly feature vector(s), float32.

    One sample ``(T,326), (T,1024), (T,), (T,)`` → ``(9452,)``; a batch ``(B,T,…)`` → ``(B, 9452)``.
    Vectorised over the batch the same way as the tabular builder (rows grouped by valid-frame
    count), with the original's per-sample numpy reductions along the time axis.
    """
    xf_b, xa_b, fm_b, am_b, single = as_sequence_batch(xf, xa, fm, am)
    out = np.zeros((fm_b.shape[0], ANOMALY_DIM), dtype=np.float32)
    _modality_block(out, xf_b, fm_b == 1, OFF_FACE, OFF_FACE_DELTA)
    _modality_block(out, xa_b, am_b == 1, OFF_AUDIO, OFF_AUDIO_DELTA)
    return out[0] if single else out


def profile_from_masks(fm: npt.ArrayLike, am: npt.ArrayLike) -> str:
    """Detector profile of one sample: both present → both, audio only → audio_only, else video_only."""
    has_face = bool(np.asarray(fm, dtype=np.float32).sum() > 0)
    has_audio = bool(np.asarray(am, dtype=np.float32).sum() > 0)
    if has_face and has_audio:
        return "both"
    if has_audio:
        return "audio_only"
    return "video_only"


def profiles_from_masks(fm: npt.ArrayLike, am: npt.ArrayLike) -> list[str]:
    """:func:`profile_from_masks` for a batch of masks (B, T)."""
    fm_a = np.asarray(fm, dtype=np.float32)
    am_a = np.asarray(am, dtype=np.float32)
    return [profile_from_masks(f, a) for f, a in zip(fm_a, am_a, strict=True)]


# ---------------------------------------------------------------------------------------------
# Detectors
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnomalyResult:
    """One row's anomaly verdict: raw ``decision_function`` score, flag, detector used, threshold."""

    score: float
    is_anomaly: bool
    detector: str
    threshold: float


@dataclass(eq=False)
class AnomalyDetector:
    """One profile's detector: StandardScaler → optional PCA → IsolationForest → threshold.

    Attributes:
        name: ``both`` / ``audio_only`` / ``video_only`` / ``global_fallback``.
        scaler_mean, scaler_scale: float64 (9452,) the global scaler's ``mean_`` / ``scale_``.
        pca_components: float32 (k, 9452) or None when the detector has no PCA.
        pca_mean: float32 (9452,) or None.
        forest: the IsolationForest as arrays.
        threshold: anomalous iff score < threshold.
    """

    name: str
    scaler_mean: np.ndarray
    scaler_scale: np.ndarray
    pca_components: np.ndarray | None
    pca_mean: np.ndarray | None
    forest: IsolationForestArrays
    threshold: float
    _mean32: np.ndarray = field(init=False, repr=False)
    _scale32: np.ndarray = field(init=False, repr=False)
    _mean_proj: np.ndarray | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.scaler_mean = np.ascontiguousarray(self.scaler_mean, dtype=np.float64)
        self.scaler_scale = np.ascontiguousarray(self.scaler_scale, dtype=np.float64)
        self.threshold = float(self.threshold)
        if self.scaler_mean.shape != (ANOMALY_DIM,) or self.scaler_scale.shape != (ANOMALY_DIM,):
            raise ValueError(
                f"detector {self.name!r}: scaler shapes {self.scaler_mean.shape}/{self.scaler_scale.shape}, "
                f"expected ({ANOMALY_DIM},)"
            )
        if (self.pca_components is None) != (self.pca_mean is None):
            raise ValueError(f"detector {self.name!r}: pca_components and pca_mean must be both set or both None")
        width = ANOMALY_DIM
        if self.pca_components is not None and self.pca_mean is not None:
            self.pca_components = np.ascontiguousarray(self.pca_components, dtype=np.float32)
            self.pca_mean = np.ascontiguousarray(self.pca_mean, dtype=np.float32)
            if self.pca_components.ndim != 2 or self.pca_components.shape[1] != ANOMALY_DIM:
                raise ValueError(
                    f"detector {self.name!r}: pca_components shape {self.pca_components.shape}, "
                    f"expected (k, {ANOMALY_DIM})"
                )
            if self.pca_mean.shape != (ANOMALY_DIM,):
                raise ValueError(f"detector {self.name!r}: pca_mean shape {self.pca_mean.shape}")
            width = int(self.pca_components.shape[0])
            self._mean_proj = self.pca_mean.reshape(1, -1) @ self.pca_components.T
        else:
            self._mean_proj = None
        if self.forest.n_features_in != width:
            raise ValueError(
                f"detector {self.name!r}: forest expects {self.forest.n_features_in} inputs, scaler/PCA give {width}"
            )
        # scikit-learn's float32 path casts mean_/scale_ to the input dtype on every call.
        self._mean32 = self.scaler_mean.astype(np.float32)
        self._scale32 = self.scaler_scale.astype(np.float32)

    @property
    def n_components(self) -> int | None:
        """PCA width, or None when the detector scores the scaled features directly."""
        return None if self.pca_components is None else int(self.pca_components.shape[0])

    def transform(self, X: npt.ArrayLike) -> np.ndarray:
        """Scaler (+ PCA) in float32: the IsolationForest's input, (B, n_components or 9452)."""
        x = np.asarray(X, dtype=np.float32)
        if x.ndim == 1:
            x = x.reshape(1, -1)
        if x.ndim != 2 or x.shape[1] != ANOMALY_DIM:
            raise ValueError(f"expected anomaly features (B, {ANOMALY_DIM}), got shape {np.shape(X)}")
        xs = (x - self._mean32) / self._scale32
        if self.pca_components is None or self._mean_proj is None:
            return xs
        out = xs @ self.pca_components.T
        out -= self._mean_proj
        return out

    def score(self, X: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """``(scores float64 (B,), flags bool (B,))``; higher score = more normal."""
        scores = self.forest.decision_function(self.transform(X))
        return scores, scores < self.threshold

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Numeric state; forest arrays are prefixed ``forest.``."""
        arrays: dict[str, np.ndarray] = {
            "scaler_mean": self.scaler_mean,
            "scaler_scale": self.scaler_scale,
        }
        if self.pca_components is not None and self.pca_mean is not None:
            arrays["pca_components"] = self.pca_components
            arrays["pca_mean"] = self.pca_mean
        for key, value in self.forest.to_arrays().items():
            arrays[f"forest.{key}"] = value
        return arrays

    def meta(self) -> dict[str, Any]:
        """JSON-able scalars: name, threshold (exact float round-trip via JSON), sizes."""
        return {
            "name": self.name,
            "threshold": self.threshold,
            "n_components": self.n_components,
            "n_trees": self.forest.n_trees,
            "feature_version": ANOMALY_FEATURE_VERSION,
            "anomaly_dim": ANOMALY_DIM,
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> AnomalyDetector:
        """Inverse of :meth:`to_arrays` + :meth:`meta`."""
        version = meta.get("feature_version", ANOMALY_FEATURE_VERSION)
        if version != ANOMALY_FEATURE_VERSION:
            raise ValueError(
                f"anomaly detector {meta.get('name')!r} built for features {version!r}, "
                f"this code builds {ANOMALY_FEATURE_VERSION!r}"
            )
        forest = IsolationForestArrays.from_arrays(
            {k[len("forest.") :]: v for k, v in arrays.items() if k.startswith("forest.")}
        )
        has_pca = "pca_components" in arrays
        det = cls(
            name=str(meta["name"]),
            scaler_mean=arrays["scaler_mean"],
            scaler_scale=arrays["scaler_scale"],
            pca_components=arrays["pca_components"] if has_pca else None,
            pca_mean=arrays["pca_mean"] if has_pca else None,
            forest=forest,
            threshold=float(meta["threshold"]),
        )
        if meta.get("n_components") != det.n_components:
            raise ValueError(
                f"anomaly detector {det.name!r}: meta n_components={meta.get('n_components')}, "
                f"arrays give {det.n_components}"
            )
        return det


@dataclass(eq=False)
class AnomalyModel:
    """The detector set, keyed by ``both`` / ``audio_only`` / ``video_only`` / ``global_fallback``.

    A profile without its own detector uses ``global_fallback``, as the original does when an
    ``iso_<profile>.joblib`` is missing.
    """

    detectors: dict[str, AnomalyDetector]

    def __post_init__(self) -> None:
        unknown = sorted(set(self.detectors) - set(DETECTOR_NAMES))
        if unknown:
            raise ValueError(f"unknown anomaly detector names {unknown}; expected a subset of {DETECTOR_NAMES}")
        if not self.detectors:
            raise ValueError("AnomalyModel needs at least one detector")
        for key, det in self.detectors.items():
            if det.name != key:
                raise ValueError(f"detector stored under {key!r} is named {det.name!r}")

    def detector_for(self, profile: str) -> AnomalyDetector:
        """The profile's detector, else the global fallback; KeyError if neither exists."""
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; expected one of {PROFILES}")
        det = self.detectors.get(profile) or self.detectors.get(GLOBAL_FALLBACK)
        if det is None:
            raise KeyError(f"no anomaly detector for profile {profile!r} and no {GLOBAL_FALLBACK!r} detector")
        return det

    def score_batch(self, features: npt.ArrayLike, profiles: Sequence[str]) -> list[AnomalyResult]:
        """Score (B, 9452) rows, row i with the detector of ``profiles[i]``.

        Rows that resolve to the same detector are scored in one call (one scaler/PCA matmul and one
        forest walk for all of them).
        """
        x = np.asarray(features, dtype=np.float32)
        if x.ndim == 1:
            x = x.reshape(1, -1)
        if x.ndim != 2 or x.shape[1] != ANOMALY_DIM:
            raise ValueError(f"expected anomaly features (B, {ANOMALY_DIM}), got shape {np.shape(features)}")
        if len(profiles) != x.shape[0]:
            raise ValueError(f"{x.shape[0]} feature rows but {len(profiles)} profiles")
        by_detector: dict[str, list[int]] = {}
        for i, profile in enumerate(profiles):
            by_detector.setdefault(self.detector_for(profile).name, []).append(i)
        results: list[AnomalyResult | None] = [None] * x.shape[0]
        for name, rows in by_detector.items():
            det = self.detectors[name]
            scores, flags = det.score(x[rows])
            for i, s, f in zip(rows, scores, flags, strict=True):
                results[i] = AnomalyResult(score=float(s), is_anomaly=bool(f), detector=name, threshold=det.threshold)
        return [r for r in results if r is not None]

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Every detector's arrays, keys prefixed ``<detector name>.``."""
        arrays: dict[str, np.ndarray] = {}
        for name, det in self.detectors.items():
            for key, value in det.to_arrays().items():
                arrays[f"{name}.{key}"] = value
        return arrays

    def meta(self) -> dict[str, Any]:
        """JSON-able: feature version plus each detector's meta."""
        return {
            "feature_version": ANOMALY_FEATURE_VERSION,
            "anomaly_dim": ANOMALY_DIM,
            "detectors": {name: det.meta() for name, det in self.detectors.items()},
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> AnomalyModel:
        """Inverse of :meth:`to_arrays` + :meth:`meta`."""
        version = meta.get("feature_version")
        if version != ANOMALY_FEATURE_VERSION:
            raise ValueError(
                f"anomaly bundle feature_version={version!r}, this code builds {ANOMALY_FEATURE_VERSION!r}"
            )
        detectors: dict[str, AnomalyDetector] = {}
        for name, det_meta in meta["detectors"].items():
            prefix = f"{name}."
            sub = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
            detectors[name] = AnomalyDetector.from_arrays(sub, det_meta)
        return cls(detectors=detectors)
