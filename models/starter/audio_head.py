"""The starter audio head: pool a normalised (10, D) window sequence, then a linear softmax classifier.

Pooling (:func:`pool_sequence`): over the valid steps of the sequence (mask 1), the mean and the
std of every feature, plus the fraction of valid steps; ``P = 2·D + 1``. A row without any valid
step pools to zeros (the predictor never uses audio logits for such a row; they are simply zeros).

Head (:class:`AudioHead`): a standardiser of the pooled vector followed by multinomial logistic
regression, ``logits = ((pooled − mean) / scale) @ weight + bias``. It is fitted with scikit-learn
at training time only (:mod:`models.starter.audio_train`); at run time it is four numpy arrays
(:meth:`AudioHead.to_arrays` / :meth:`AudioHead.from_arrays`), so nothing here imports sklearn or
unpickles anything.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from models.constants import NUM_CLASSES

HEAD_KIND = "standardised-logistic"


def pooled_dim(input_dim: int) -> int:
    return 2 * input_dim + 1


def pool_sequence(xa: npt.ArrayLike, am: npt.ArrayLike) -> np.ndarray:
    """``(B, T, D)`` normalised features + ``(B, T)`` mask → ``(B, 2·D + 1)`` float32.

    [mean over valid steps, std over valid steps, valid fraction]; zeros for a row with no valid step.
    """
    x = np.asarray(xa, dtype=np.float32)
    m = np.asarray(am, dtype=np.float32)
    if x.ndim != 3 or m.shape != x.shape[:2]:
        raise ValueError(f"expected xa (B,T,D) and am (B,T), got {x.shape} and {m.shape}")
    w = (m > 0).astype(np.float32)
    n = w.sum(axis=1, keepdims=True)  # (B, 1)
    safe = np.maximum(n, 1.0)
    mean = (x * w[:, :, None]).sum(axis=1) / safe
    var = (((x - mean[:, None, :]) ** 2) * w[:, :, None]).sum(axis=1) / safe
    out = np.concatenate([mean, np.sqrt(np.maximum(var, 0.0)), n / x.shape[1]], axis=1).astype(np.float32)
    out[n[:, 0] == 0] = 0.0
    return out


class AudioHead:
    """Standardiser + linear softmax classifier over pooled sequences; numpy only at run time."""

    def __init__(self, mean: npt.ArrayLike, scale: npt.ArrayLike, weight: npt.ArrayLike, bias: npt.ArrayLike) -> None:
        self.mean = np.ascontiguousarray(mean, dtype=np.float32).reshape(-1)
        self.scale = np.ascontiguousarray(scale, dtype=np.float32).reshape(-1)
        self.weight = np.ascontiguousarray(weight, dtype=np.float32)
        self.bias = np.ascontiguousarray(bias, dtype=np.float32).reshape(-1)
        p = self.mean.shape[0]
        if self.scale.shape != (p,) or self.weight.shape != (p, NUM_CLASSES) or self.bias.shape != (NUM_CLASSES,):
            raise ValueError(
                f"audio head arrays disagree: mean {self.mean.shape}, scale {self.scale.shape}, "
                f"weight {self.weight.shape} (expected ({p}, {NUM_CLASSES})), bias {self.bias.shape}"
            )
        if (p - 1) % 2 != 0 or p < 3:
            raise ValueError(f"pooled dim {p} is not 2·D + 1")
        arrays = (self.mean, self.scale, self.weight, self.bias)
        if not all(np.all(np.isfinite(a)) for a in arrays) or not np.all(self.scale > 0):
            raise ValueError("audio head arrays must be finite with a positive scale")

    @property
    def pooled_dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def input_dim(self) -> int:
        """D, the per-window feature dim the head was trained on."""
        return (self.pooled_dim - 1) // 2

    def logits(self, pooled: npt.ArrayLike) -> np.ndarray:
        """``(B, P)`` pooled vectors → ``(B, 6)`` float32 logits; all-zero rows (no audio) give zeros."""
        x = np.asarray(pooled, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.pooled_dim:
            raise ValueError(f"expected pooled (B, {self.pooled_dim}), got {x.shape}")
        z = (x - self.mean) / self.scale
        # Plain loops over the 6 classes (no BLAS): tiny, deterministic and free of thread stalls.
        out = np.empty((x.shape[0], NUM_CLASSES), dtype=np.float32)
        for k in range(NUM_CLASSES):
            out[:, k] = (z * self.weight[:, k]).sum(axis=1) + self.bias[k]
        out[~np.any(x != 0.0, axis=1)] = 0.0
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "scale": self.scale, "weight": self.weight, "bias": self.bias}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> AudioHead:
        missing = [k for k in ("mean", "scale", "weight", "bias") if k not in arrays]
        if missing:
            raise ValueError(f"audio head: missing arrays {missing}")
        return cls(arrays["mean"], arrays["scale"], arrays["weight"], arrays["bias"])

    def meta(self) -> dict[str, Any]:
        return {
            "kind": HEAD_KIND,
            "input_dim": self.input_dim,
            "pooled_dim": self.pooled_dim,
            "pooling": "mean, std over valid steps + valid fraction",
        }
