"""Per-speaker running normalisation of audio feature vectors (bounded state, Welford updates).

Each participant (each actor in training) gets one :class:`SpeakerNormaliser`. Every audio vector
the participant produces is fed to :meth:`SpeakerNormaliser.update` in arrival order, and sequences
are normalised with the statistics as they stand. The training set's global mean and std act as a
prior worth ``prior_count`` vectors: before the first update the normaliser is the global z-score,
and the speaker's own statistics take over as their windows accumulate. The state is three arrays
and a count, whatever the length of the meeting.

With prior (m0, s0, n0) and the speaker's vectors x_1..x_k, the statistics are those of the pooled
sample in which the prior contributes n0 pseudo-vectors of mean m0 and variance s0²:

    n = n0 + k,  mean = (n0·m0 + Σx) / n,  var = (n0·s0² + Σ(x − mean_k)² + n0·k/n·(mean_k − m0)²) / n

computed incrementally (Welford / Chan), so it is exact and numerically stable.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

# Relative floor on the std: a dimension that does not move for one speaker is not blown up.
STD_FLOOR = 1e-3


class SpeakerNormaliser:
    """Running mean/std of one speaker's feature vectors with a global prior; not thread-safe."""

    def __init__(self, prior_mean: npt.ArrayLike, prior_std: npt.ArrayLike, prior_count: float) -> None:
        mean = np.asarray(prior_mean, dtype=np.float64).reshape(-1)
        std = np.asarray(prior_std, dtype=np.float64).reshape(-1)
        if mean.shape != std.shape or mean.size == 0:
            raise ValueError(f"prior mean/std must be vectors of one length, got {mean.shape} and {std.shape}")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
            raise ValueError("prior mean/std must be finite with a positive std")
        if not (np.isfinite(prior_count) and prior_count >= 0):
            raise ValueError(f"prior_count must be finite and >= 0, got {prior_count}")
        self.prior_mean = mean
        self.prior_std = std
        self.prior_count = float(prior_count)
        self.dim = int(mean.size)
        self._floor = STD_FLOOR * std
        self.reset()

    def reset(self) -> None:
        """Forget the speaker: back to the prior."""
        self.count = self.prior_count
        self.updates = 0
        self._mean = self.prior_mean.copy()
        self._m2 = self.prior_std**2 * self.prior_count

    def update(self, vec: npt.ArrayLike) -> None:
        x = np.asarray(vec, dtype=np.float64).reshape(-1)
        if x.shape[0] != self.dim:
            raise ValueError(f"expected a {self.dim}-d vector, got shape {np.shape(vec)}")
        if not np.all(np.isfinite(x)):
            raise ValueError("feature vector contains NaN or Inf")
        self.count += 1.0
        self.updates += 1
        delta = x - self._mean
        self._mean += delta / self.count
        self._m2 += delta * (x - self._mean)

    @property
    def mean(self) -> np.ndarray:
        return self._mean.copy()

    @property
    def std(self) -> np.ndarray:
        if self.count <= 0:
            return self.prior_std.copy()
        out: np.ndarray = np.maximum(np.sqrt(np.maximum(self._m2, 0.0) / self.count), self._floor)
        return out

    def normalise(self, x: npt.ArrayLike) -> np.ndarray:
        """``(x − mean) / std`` with the current statistics, float32, any leading shape (…, dim)."""
        xa = np.asarray(x, dtype=np.float32)
        if xa.shape[-1] != self.dim:
            raise ValueError(f"expected (..., {self.dim}) features, got shape {xa.shape}")
        mean = self._mean.astype(np.float32)
        std = self.std.astype(np.float32)
        out: np.ndarray = ((xa - mean) / std).astype(np.float32)
        return out
