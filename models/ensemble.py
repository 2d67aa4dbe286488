"""Serving-time blend of the transformer and the tabular (XGB) model, and predictor input checks.

Spec 3.10: p_modal = softmax(fusion_logits / T); the blend weights collapse with the modalities
present. The fitted pair (0.455, 0.545) was calibrated on both-modality behaviour, and each model
is only trusted where the reference trusted it: audio only → tabular model alone, face only →
transformer alone. Reproducing that collapse, not just the fitted pair, is what makes our
probabilities equal the original's for single-modality participants.

Arithmetic follows the original's dtypes: the softmax runs in torch on the float32 logits tensor and
the blend multiplies float32 arrays by Python-float weights, which numpy 2 performs in float32.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

from models.constants import AUDIO_DIM, FACE_DIM, NUM_CLASSES, SEQ_LEN

__all__ = ["ensemble_weights", "fuse", "softmax_with_temperature", "validate_inputs"]

F32Array = npt.NDArray[np.float32]


def ensemble_weights(face_present: bool, audio_present: bool, w_modal: float, w_xgb: float) -> tuple[float, float]:
    """(w_transformer, w_tabular) for one sample, with the reference's modality collapse.

    Neither present returns (0.5, 0.5) as the original did; validation rejects such inputs before
    this is reached.
    """
    if face_present and audio_present:
        return float(w_modal), float(w_xgb)
    if audio_present:
        return 0.0, 1.0
    if face_present:
        return 1.0, 0.0
    return 0.5, 0.5


def softmax_with_temperature(logits: npt.ArrayLike, temperature: float) -> F32Array:
    """softmax(logits / T) over the last axis, computed in torch float32 exactly as the original did."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    t = torch.from_numpy(np.ascontiguousarray(np.asarray(logits, dtype=np.float32)))
    with torch.inference_mode():
        p = torch.softmax(t / temperature, dim=-1)
    out: F32Array = p.numpy().copy()
    return out


def fuse(
    fusion_logits: npt.ArrayLike,
    p_tabular: npt.ArrayLike,
    face_present: npt.ArrayLike,
    audio_present: npt.ArrayLike,
    temperature: float,
    w_modal: float,
    w_xgb: float,
) -> tuple[F32Array, F32Array]:
    """Blend a batch: returns ``(p_modal (B,6), probs (B,6))``, both float32.

    ``face_present``/``audio_present`` are (B,) booleans from the masks (any frame valid).
    """
    logits = np.asarray(fusion_logits, dtype=np.float32)
    p_tab = np.asarray(p_tabular, dtype=np.float32)
    if logits.ndim != 2 or logits.shape[1] != NUM_CLASSES:
        raise ValueError(f"fusion_logits must be (B, {NUM_CLASSES}), got {logits.shape}")
    if p_tab.shape != logits.shape:
        raise ValueError(f"p_tabular must be {logits.shape}, got {p_tab.shape}")
    face = np.asarray(face_present, dtype=bool).reshape(-1)
    audio = np.asarray(audio_present, dtype=bool).reshape(-1)
    if face.shape != (logits.shape[0],) or audio.shape != (logits.shape[0],):
        raise ValueError("face_present/audio_present must have one entry per row")

    p_modal = softmax_with_temperature(logits, temperature)
    probs = np.empty_like(p_modal)
    for i in range(logits.shape[0]):
        w_m, w_x = ensemble_weights(bool(face[i]), bool(audio[i]), w_modal, w_xgb)
        # Python-float × float32 array stays float32 (NEP 50), as in the original's numpy blend.
        probs[i] = w_m * p_modal[i] + w_x * p_tab[i]
    return p_modal, probs


def validate_inputs(
    xf: npt.ArrayLike,
    xa: npt.ArrayLike,
    fm: npt.ArrayLike,
    am: npt.ArrayLike,
    face_dim: int = FACE_DIM,
    audio_dim: int = AUDIO_DIM,
) -> str | None:
    """The reference predictor's input checks; an error message, or None when the inputs are usable.

    Shapes (10,326), (10,1024), (10,), (10,); masks strictly 0/1; at least one valid frame; no NaN or
    Inf in the features. Messages follow the original's wording (values printed as plain floats).
    """
    arrays = {"xf": xf, "xa": xa, "fm": fm, "am": am}
    expected = {"xf": (SEQ_LEN, face_dim), "xa": (SEQ_LEN, audio_dim), "fm": (SEQ_LEN,), "am": (SEQ_LEN,)}
    np_arrays: dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        try:
            arr = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError):
            return f"{name} is not a numeric array"
        if arr.shape != expected[name]:
            return f"{name} shape mismatch: expected {expected[name]}, got {arr.shape}"
        np_arrays[name] = arr
    for name in ("fm", "am"):
        values = np.unique(np_arrays[name])
        if not np.all((values == 0.0) | (values == 1.0)):
            shown = ", ".join(repr(float(v)) for v in values)
            return f"{name} must be binary (0/1), got unique values: {{{shown}}}"
    if not np_arrays["fm"].any() and not np_arrays["am"].any():
        return "No valid frames: both fm and am are all-zero"
    for name in ("xf", "xa"):
        if np.isnan(np_arrays[name]).any():
            return "NaN detected in input features"
        if np.isinf(np_arrays[name]).any():
            return "Inf detected in input features"
    return None
