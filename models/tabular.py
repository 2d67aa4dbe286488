"""The tabular (XGBoost) branch: the 8,149-d feature vector and the median-fill → PCA → booster model.

Feature layout (docs/training.md, "XGBoost", the original's ``train_xgb.build_features``), computed on the *normalised*
sequences, "valid" meaning mask == 1:

======  =====  ==============================================================================
offset  len    content
======  =====  ==============================================================================
0       1304   face mean | std (ddof 0) | min | max over valid frames        (NaN if none)
1304    4096   audio mean | std | min | max                                  (NaN if none)
5400    326    face delta = last valid − first valid                         (NaN if < 2)
5726    1024   audio delta                                                   (NaN if < 2)
6750    326    face slope in standardised time                               (NaN if < 2)
7076    1024   audio slope                                                   (NaN if < 2)
8100    32     15 blendshape means, 15 maxes, |smileL−smileR|, |browL−browR|  (NaN if no face)
8132    6      pitch/yaw/roll mean and std                                   (NaN if no face)
8138    3      audio rhythm: std of relative norms, its slope, peak position  (see below)
8141    1      face motion energy (landmark dims 0–271)                      (NaN if < 2)
8142    4      has_face, has_audio, face coverage, audio coverage
8146    3      one-hot modality (audio_only, video_only, both), taken from the masks
======  =====  ==============================================================================

NaN marks an absent block exactly where the original puts it, because the booster learnt a split
direction for missing values and the median fill before PCA replaces exactly those entries.

The builder is vectorised over the batch by grouping rows by their number of valid frames: inside a
group every row has the same number ``n`` of valid frames, so gathering them gives a dense
``(rows, n, D)`` block and each statistic is one numpy reduction along the time axis. Those are the
very reductions the original runs per sample on its ``(n, D)`` slice (same dtype, same order of
summation), so the values agree to float32 rounding and NaN positions agree exactly. A call with the
bot's usual ≤ 10 participants costs one to a few groups instead of a Python loop per sample.

:class:`TabularModel` holds what inference needs and nothing else: the column medians, the PCA
basis (float32, applied exactly like scikit-learn 1.9.1 applies it) and the booster. Serving
predictions walk the booster's trees as numpy arrays (:mod:`models.boosted`, same probabilities,
~4–12× cheaper for the bot's 1–10 rows); the booster itself stays for training and saving.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import xgboost

from models.boosted import BoostedTreesArrays
from models.constants import AUDIO_DIM, FACE_DIM, NUM_CLASSES, TABULAR_DIM, TABULAR_FEATURE_VERSION

__all__ = [
    "TabularModel",
    "ValidGroup",
    "as_sequence_batch",
    "build_tabular_features",
    "iter_valid_groups",
]

# Face-vector layout (docs/features.md, "Face: 326 floats per frame"): landmarks, 51 ARKit blendshapes, pose.
LANDMARK_END = 272
BLENDSHAPE_START = 272
POSE_START = 323
# Absolute face dims of the 15 emotion blendshapes, in the original's order: smileL, smileR, frownL,
# frownR, browDownL, browDownR, browInnerUp, jawOpen, sneerL, sneerR, eyeWideL, eyeWideR, cheekPuff,
# pucker, funnel.
EMOTION_BLEND_DIMS = (315, 316, 301, 302, 272, 273, 274, 296, 321, 322, 292, 293, 277, 309, 303)
SMILE_L, SMILE_R = 315, 316
BROW_DOWN_L, BROW_DOWN_R = 272, 273

# Offsets into the 8,149-d vector.
OFF_FACE_AGG = 0
OFF_AUDIO_AGG = 4 * FACE_DIM  # 1304
OFF_FACE_DELTA = OFF_AUDIO_AGG + 4 * AUDIO_DIM  # 5400
OFF_AUDIO_DELTA = OFF_FACE_DELTA + FACE_DIM  # 5726
OFF_FACE_SLOPE = OFF_AUDIO_DELTA + AUDIO_DIM  # 6750
OFF_AUDIO_SLOPE = OFF_FACE_SLOPE + FACE_DIM  # 7076
OFF_BLEND = OFF_AUDIO_SLOPE + AUDIO_DIM  # 8100
OFF_POSE = OFF_BLEND + 2 * len(EMOTION_BLEND_DIMS) + 2  # 8132
OFF_RHYTHM = OFF_POSE + 6  # 8138
OFF_MOTION = OFF_RHYTHM + 3  # 8141
OFF_MODALITY = OFF_MOTION + 1  # 8142: has_face, has_audio, face cov, audio cov, one-hot (3)
assert OFF_MODALITY + 7 == TABULAR_DIM

_EPS = 1e-6
_log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Shared sequence helpers (also used by models.anomaly)
# ---------------------------------------------------------------------------------------------


def as_sequence_batch(
    xf: npt.ArrayLike, xa: npt.ArrayLike, fm: npt.ArrayLike, am: npt.ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """Coerce one sample ``(T,326),(T,1024),(T,),(T,)`` or a batch ``(B,T,...)`` to float32 batches.

    Returns ``(xf, xa, fm, am, single)``; ``single`` says the caller passed one sample, so the
    builder can hand back a 1-D vector. float32 is what the original casts to before building
    features, and every statistic below is computed in it.
    """
    xf_a = np.asarray(xf, dtype=np.float32)
    xa_a = np.asarray(xa, dtype=np.float32)
    fm_a = np.asarray(fm, dtype=np.float32)
    am_a = np.asarray(am, dtype=np.float32)
    single = xf_a.ndim == 2
    if single:
        xf_a, xa_a, fm_a, am_a = xf_a[None], xa_a[None], fm_a[None], am_a[None]
    if xf_a.ndim != 3 or xa_a.ndim != 3 or fm_a.ndim != 2 or am_a.ndim != 2:
        raise ValueError(
            "expected xf (B,T,326), xa (B,T,1024), fm (B,T), am (B,T) or the same without B; got "
            f"{np.shape(xf)}, {np.shape(xa)}, {np.shape(fm)}, {np.shape(am)}"
        )
    b, t = fm_a.shape
    if xf_a.shape != (b, t, FACE_DIM) or xa_a.shape != (b, t, AUDIO_DIM) or am_a.shape != (b, t):
        raise ValueError(
            f"inconsistent shapes: xf {xf_a.shape}, xa {xa_a.shape}, fm {fm_a.shape}, am {am_a.shape}; "
            f"expected (B,T,{FACE_DIM}), (B,T,{AUDIO_DIM}), (B,T), (B,T)"
        )
    return xf_a, xa_a, fm_a, am_a, single


@dataclass(frozen=True)
class ValidGroup:
    """Batch rows that share the same number ``n`` of valid frames, with those frames gathered.

    Attributes:
        rows: int64 (b,) batch indices of the rows in this group.
        n: number of valid frames of each of these rows.
        frames: float32 (b, n, D) the valid frames of each row, in time order.
        times: int64 (b, n) the time index of each gathered frame.
    """

    rows: np.ndarray
    n: int
    frames: np.ndarray
    times: np.ndarray


def iter_valid_groups(x: np.ndarray, valid: np.ndarray) -> Iterator[ValidGroup]:
    """Yield one :class:`ValidGroup` per distinct valid-frame count in the batch (n = 0 included).

    ``x`` is (B, T, D), ``valid`` (B, T) bool. A stable argsort puts each row's valid frames first in
    time order, so ``frames[:, k]`` is the k-th valid frame — what ``X[mask == 1][k]`` gives.
    """
    counts = valid.sum(axis=1)
    order = np.argsort(~valid, axis=1, kind="stable")
    for n in np.unique(counts):
        k = int(n)
        rows = np.flatnonzero(counts == k)
        times = order[rows, :k]
        frames = x[rows[:, None], times]
        yield ValidGroup(rows=rows, n=k, frames=frames, times=times)


def _slope(frames: np.ndarray, times: np.ndarray) -> np.ndarray:
    """OLS slope against standardised time: Σ t·x / (Σ t² + 1e-6), t = (i − mean)/(std + 1e-6)."""
    t = times.astype(np.float32)
    t = (t - t.mean(axis=1, keepdims=True)) / (t.std(axis=1, keepdims=True) + _EPS)
    num = (t[:, :, None] * frames).sum(axis=1)
    den = (t * t).sum(axis=1) + _EPS
    return num / den[:, None]


# ---------------------------------------------------------------------------------------------
# Feature builder
# ---------------------------------------------------------------------------------------------


def _face_blocks(out: np.ndarray, xf: np.ndarray, valid: np.ndarray) -> None:
    d = FACE_DIM
    for g in iter_valid_groups(xf, valid):
        if g.n == 0:
            continue  # every face block stays NaN
        r, v = g.rows, g.frames
        o = OFF_FACE_AGG
        out[r, o : o + d] = v.mean(axis=1)
        out[r, o + d : o + 2 * d] = v.std(axis=1)
        out[r, o + 2 * d : o + 3 * d] = v.min(axis=1)
        out[r, o + 3 * d : o + 4 * d] = v.max(axis=1)
        sel = v[:, :, list(EMOTION_BLEND_DIMS)]
        nb = len(EMOTION_BLEND_DIMS)
        out[r, OFF_BLEND : OFF_BLEND + nb] = sel.mean(axis=1)
        out[r, OFF_BLEND + nb : OFF_BLEND + 2 * nb] = sel.max(axis=1)
        out[r, OFF_BLEND + 2 * nb] = np.abs(v[:, :, SMILE_L] - v[:, :, SMILE_R]).mean(axis=1)
        out[r, OFF_BLEND + 2 * nb + 1] = np.abs(v[:, :, BROW_DOWN_L] - v[:, :, BROW_DOWN_R]).mean(axis=1)
        pose = v[:, :, POSE_START:]
        out[r, OFF_POSE : OFF_POSE + 3] = pose.mean(axis=1)
        out[r, OFF_POSE + 3 : OFF_POSE + 6] = pose.std(axis=1)
        if g.n >= 2:
            out[r, OFF_FACE_DELTA : OFF_FACE_DELTA + d] = v[:, -1] - v[:, 0]
            out[r, OFF_FACE_SLOPE : OFF_FACE_SLOPE + d] = _slope(v, g.times)
            diffs = np.diff(v[:, :, :LANDMARK_END], axis=1)
            out[r, OFF_MOTION] = (diffs**2).reshape(len(r), -1).mean(axis=1)


def _audio_blocks(out: np.ndarray, xa: np.ndarray, valid: np.ndarray) -> None:
    d = AUDIO_DIM
    seq_len = valid.shape[1]
    for g in iter_valid_groups(xa, valid):
        if g.n == 0:
            continue
        r, v = g.rows, g.frames
        o = OFF_AUDIO_AGG
        out[r, o : o + d] = v.mean(axis=1)
        out[r, o + d : o + 2 * d] = v.std(axis=1)
        out[r, o + 2 * d : o + 3 * d] = v.min(axis=1)
        out[r, o + 3 * d : o + 4 * d] = v.max(axis=1)
        if g.n >= 2:
            out[r, OFF_AUDIO_DELTA : OFF_AUDIO_DELTA + d] = v[:, -1] - v[:, 0]
            out[r, OFF_AUDIO_SLOPE : OFF_AUDIO_SLOPE + d] = _slope(v, g.times)
        # Rhythm: per-frame L2 norms relative to their own mean (whole triple NaN if the mean ≈ 0).
        norms = np.linalg.norm(v, axis=2)
        mean_norm = norms.mean(axis=1)
        ok = mean_norm >= _EPS
        if not ok.any():
            continue
        r_ok, norms, times = r[ok], norms[ok], g.times[ok]
        rel = norms / mean_norm[ok][:, None]
        out[r_ok, OFF_RHYTHM] = rel.std(axis=1)
        if g.n >= 2:
            t = (times - times[:, :1]).astype(np.float32)
            t_std = t / (t.std(axis=1, keepdims=True) + _EPS)
            out[r_ok, OFF_RHYTHM + 1] = (t_std * rel).sum(axis=1) / ((t_std**2).sum(axis=1) + _EPS)
        peak = times[np.arange(len(r_ok)), norms.argmax(axis=1)]
        out[r_ok, OFF_RHYTHM + 2] = peak.astype(np.float64) / seq_len


def build_tabular_features(xf: npt.ArrayLike, xa: npt.ArrayLike, fm: npt.ArrayLike, am: npt.ArrayLike) -> np.ndarray:
    """Build the 8,149-d XGBoost feature vector(s), float32 with NaN for absent blocks.

    Accepts one sample ``(T,326), (T,1024), (T,), (T,)`` → ``(8149,)`` or a batch ``(B,T,…)`` →
    ``(B, 8149)``. Inputs are the normalised sequences with padded rows zeroed and binary masks.
    The modality one-hot comes from the masks (both present → both, audio only → audio_only,
    otherwise video_only), as at the original's inference.
    """
    xf_b, xa_b, fm_b, am_b, single = as_sequence_batch(xf, xa, fm, am)
    batch = fm_b.shape[0]
    out = np.full((batch, TABULAR_DIM), np.nan, dtype=np.float32)
    _face_blocks(out, xf_b, fm_b == 1)
    _audio_blocks(out, xa_b, am_b == 1)

    has_face = fm_b.sum(axis=1) > 0
    has_audio = am_b.sum(axis=1) > 0
    o = OFF_MODALITY
    out[:, o] = has_face
    out[:, o + 1] = has_audio
    out[:, o + 2] = fm_b.mean(axis=1)
    out[:, o + 3] = am_b.mean(axis=1)
    both = has_face & has_audio
    out[:, o + 4] = has_audio & ~has_face  # audio_only
    out[:, o + 5] = ~has_audio  # video_only (also the unreachable "neither" case, like the original)
    out[:, o + 6] = both
    return out[0] if single else out


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


@dataclass(eq=False)
class TabularModel:
    """Median fill → PCA → XGBoost ``multi:softprob``, as the original's ``_xgb_probs``.

    Attributes:
        col_medians: float32 (8149,) train column medians used to replace NaN.
        pca_components: float32 (k, 8149) PCA basis (``components_``).
        pca_mean: float32 (8149,) PCA centring vector (``mean_``).
        booster: the trained ``xgboost.Booster`` (``missing`` = NaN).
        n_iterations: end of ``iteration_range`` (``best_iteration + 1``, or all rounds).
        nthread: OpenMP threads the booster may use (set on the booster). Default 1: XGBoost's CPU
            predictor splits work by blocks of rows, so for the ≤ 10 rows of a serving call extra
            threads do no work, yet their spin-waiting competes with BLAS and torch thread pools
            (measured: predict_proba 1 row, 3150 rounds, 2 cores: ~29 ms with all threads vs ~6–10
            ms with 1). Raise it only for large offline batches.
        fast_trees: predict with :class:`~models.boosted.BoostedTreesArrays` (the trees as numpy
            arrays) instead of ``inplace_predict``. Built once, by :meth:`prepare` (serving calls it
            at load) or else on the first prediction; a booster it does not support
            (or one whose arrays disagree with XGBoost on a probe batch) keeps XGBoost, logged at
            INFO. ``False`` forces XGBoost (tests compare both).

    ``predict_proba`` is safe to call from several threads (xgboost's ``predict`` is thread-safe for
    tree boosters; nothing here mutates state).
    """

    col_medians: np.ndarray
    pca_components: np.ndarray
    pca_mean: np.ndarray
    booster: xgboost.Booster
    n_iterations: int
    nthread: int = 1
    fast_trees: bool = True
    _mean_proj: np.ndarray = field(init=False, repr=False)
    _trees: BoostedTreesArrays | None = field(init=False, repr=False, default=None)
    _prepared: bool = field(init=False, repr=False, default=False)

    def __post_init__(self) -> None:
        self.col_medians = np.ascontiguousarray(self.col_medians, dtype=np.float32)
        self.pca_components = np.ascontiguousarray(self.pca_components, dtype=np.float32)
        self.pca_mean = np.ascontiguousarray(self.pca_mean, dtype=np.float32)
        self.n_iterations = int(self.n_iterations)
        if self.col_medians.shape != (TABULAR_DIM,):
            raise ValueError(f"col_medians has shape {self.col_medians.shape}, expected ({TABULAR_DIM},)")
        if self.pca_components.ndim != 2 or self.pca_components.shape[1] != TABULAR_DIM:
            raise ValueError(f"pca_components has shape {self.pca_components.shape}, expected (k, {TABULAR_DIM})")
        if self.pca_mean.shape != (TABULAR_DIM,):
            raise ValueError(f"pca_mean has shape {self.pca_mean.shape}, expected ({TABULAR_DIM},)")
        if np.isnan(self.col_medians).any():
            raise ValueError("col_medians contains NaN; the fill would leave NaN in the PCA input")
        if self.nthread < 1:
            raise ValueError(f"nthread must be >= 1, got {self.nthread}")
        self.booster.set_param({"nthread": int(self.nthread)})
        rounds = int(self.booster.num_boosted_rounds())
        if not 0 < self.n_iterations <= rounds:
            raise ValueError(f"n_iterations={self.n_iterations} outside 1..{rounds} (booster rounds)")
        # scikit-learn computes ``mean_ @ components_.T`` in float32 on every call; it is constant,
        # so compute it once (same operation, same result).
        self._mean_proj = self.pca_mean.reshape(1, -1) @ self.pca_components.T

    def prepare(self) -> BoostedTreesArrays | None:
        """Build the tree arrays now if ``fast_trees`` (once); the arrays, or None for XGBoost.

        Why not at construction: a process that loads a bundle without predicting with it (the
        bot's parent process when the predictor runs in a child) would pay ~3 s and ~90 MB for
        arrays it never uses. Two threads racing here both build the same arrays; one is kept.
        """
        if not self._prepared:
            self._trees = self._build_trees() if self.fast_trees else None
            self._prepared = True
        return self._trees

    def _build_trees(self) -> BoostedTreesArrays | None:
        """The booster as arrays, checked against XGBoost on a probe batch; ``None`` to keep XGBoost."""
        try:
            trees = BoostedTreesArrays.from_booster(self.booster, self.n_iterations)
            if trees.n_classes != NUM_CLASSES or trees.n_features != self.n_components:
                raise ValueError(f"booster maps {trees.n_features} inputs to {trees.n_classes} classes")
        except ValueError as exc:
            _log.info("tabular booster: tree arrays unavailable (%s); predicting with XGBoost", exc)
            return None
        # Probe rows: zeros, all-NaN (default directions), and values on split thresholds.
        rng = np.random.default_rng(0)
        probe = rng.standard_normal((8, self.n_components)).astype(np.float32)
        probe[0], probe[1] = 0.0, np.nan
        if trees.feature:  # the first trees' root splits
            probe[2:, trees.feature[0][:6]] = trees.threshold[0][:6]
        want = self.booster.inplace_predict(probe, iteration_range=(0, self.n_iterations), missing=np.nan)
        gap = float(np.max(np.abs(trees.predict_proba(probe) - np.asarray(want, dtype=np.float32))))
        if not gap <= 1e-6:
            _log.info("tabular booster: tree arrays differ from XGBoost by %.3g; predicting with XGBoost", gap)
            return None
        return trees

    @property
    def n_components(self) -> int:
        """Number of PCA components (the booster's input width)."""
        return int(self.pca_components.shape[0])

    def _as_rows(self, features: npt.ArrayLike) -> np.ndarray:
        x = np.asarray(features, dtype=np.float32)
        if x.ndim == 1:
            x = x.reshape(1, -1)
        if x.ndim != 2 or x.shape[1] != TABULAR_DIM:
            raise ValueError(f"expected features (B, {TABULAR_DIM}), got shape {np.shape(features)}")
        return x

    def transform(self, features: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(filled, pca)``: NaN → column median, then the float32 PCA projection.

        The projection is scikit-learn 1.9.1's ``PCA.transform`` in float32:
        ``X @ components_.T − mean_ @ components_.T``.
        """
        x = self._as_rows(features)
        filled = np.where(np.isnan(x), self.col_medians, x)
        pca = filled @ self.pca_components.T
        pca -= self._mean_proj
        return filled, pca

    def predict_proba(self, features: npt.ArrayLike) -> np.ndarray:
        """Class probabilities (B, 6) float32 for (B, 8149) feature rows (a 1-D row is accepted)."""
        _, pca = self.transform(features)
        trees = self.prepare()
        if trees is not None and trees.n_iterations == self.n_iterations:
            return trees.predict_proba(pca)
        # inplace_predict reads the PCA array directly (no DMatrix built per call); on the golden
        # cases its output is bit-identical to DMatrix + predict.
        probs = self.booster.inplace_predict(pca, iteration_range=(0, self.n_iterations), missing=np.nan)
        return np.asarray(probs, dtype=np.float32).reshape(pca.shape[0], NUM_CLASSES)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The numeric state (for safetensors); the booster travels separately (:meth:`booster_bytes`)."""
        return {
            "col_medians": self.col_medians,
            "pca_components": self.pca_components,
            "pca_mean": self.pca_mean,
        }

    def meta(self) -> dict[str, Any]:
        """JSON-able description: dimensions, iteration range and the feature version it expects."""
        return {
            "feature_version": TABULAR_FEATURE_VERSION,
            "tabular_dim": TABULAR_DIM,
            "pca_components": self.n_components,
            "num_classes": NUM_CLASSES,
            "n_iterations": self.n_iterations,
            "num_boosted_rounds": int(self.booster.num_boosted_rounds()),
        }

    def booster_bytes(self) -> bytes:
        """The booster as UBJSON (``save_raw("ubj")``): model only, no training configuration."""
        return bytes(self.booster.save_raw("ubj"))

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, np.ndarray], meta: dict[str, Any], booster_bytes: bytes, nthread: int = 1
    ) -> TabularModel:
        """Inverse of :meth:`to_arrays` + :meth:`meta` + :meth:`booster_bytes` (``nthread`` as above).

        Refuses a bundle built for another feature layout, since the booster's splits only mean
        something for the exact 8,149-d vector it was trained on.
        """
        version = meta.get("feature_version")
        if version != TABULAR_FEATURE_VERSION:
            raise ValueError(
                f"tabular bundle feature_version={version!r}, this code builds {TABULAR_FEATURE_VERSION!r}"
            )
        if int(meta.get("tabular_dim", TABULAR_DIM)) != TABULAR_DIM:
            raise ValueError(f"tabular bundle dim {meta.get('tabular_dim')} != {TABULAR_DIM}")
        missing = [k for k in ("col_medians", "pca_components", "pca_mean") if k not in arrays]
        if missing:
            raise KeyError(f"TabularModel.from_arrays: missing arrays {missing}")
        booster = xgboost.Booster(model_file=bytearray(booster_bytes))
        model = cls(
            col_medians=arrays["col_medians"],
            pca_components=arrays["pca_components"],
            pca_mean=arrays["pca_mean"],
            booster=booster,
            n_iterations=int(meta["n_iterations"]),
            nthread=nthread,
        )
        if "pca_components" in meta and int(meta["pca_components"]) != model.n_components:
            raise ValueError(
                f"tabular meta says {meta['pca_components']} PCA components, arrays hold {model.n_components}"
            )
        return model
