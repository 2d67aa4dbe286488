"""Rolling per-participant embedding sequences and their normalisation into predictor inputs (docs/training.md,
"Dataset file").

The predictor sees fixed (10, dim) windows in z-normalised space with a 0/1 mask per frame. This
module turns the most recent raw embeddings of each modality into exactly the arrays the reference
server built, bit for bit, so that every model downstream sees what it was trained and calibrated
on:

* fewer than 10 embeddings → front-pad by repeating the oldest one, mask 1 only on the real frames;
* z = (x − mean) / std in float32 with the training statistics, then multiplied by the mask, so
  padded rows become (signed) zeros;
* an inactive modality (disabled, stale or empty) is an all-zero window with an all-zero mask,
  normalised the same way. The reference normalised that zero window too, which leaves −0.0 where
  ``mean > 0``; we keep it so that the arrays match the original's exactly, sign bits included.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from models.constants import SEQ_LEN

__all__ = ["NormStats", "Normaliser", "RollingSequence", "assemble_inputs"]

F32Array = npt.NDArray[np.float32]

_NORM_KEYS = ("face_mean", "face_std", "audio_mean", "audio_std")


def _as_vector(value: npt.ArrayLike, dim: int, name: str) -> F32Array:
    arr = np.asarray(value, dtype=np.float32)
    if arr.size != dim:
        raise ValueError(f"{name}: expected {dim} values, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr.reshape(dim))
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains NaN or Inf")
    return arr


class Normaliser(Protocol):
    """How one participant's raw feature sequences become predictor inputs.

    The reference family z-scores with fixed training statistics (:class:`NormStats`, shared by
    every participant). The starter family also keeps per-participant running statistics of the
    audio features (``models.starter.speaker_norm``), so each participant gets its own instance and
    feeds it every audio vector it embeds. Live, replay and training all go through this interface.
    """

    @property
    def face_dim(self) -> int: ...

    @property
    def audio_dim(self) -> int: ...

    def observe_audio(self, vector: npt.ArrayLike) -> None: ...

    def normalise_face(self, x: npt.ArrayLike, mask: npt.ArrayLike) -> F32Array: ...

    def normalise_audio(self, x: npt.ArrayLike, mask: npt.ArrayLike) -> F32Array: ...


@dataclass(frozen=True, eq=False)
class NormStats:
    """Per-dimension training statistics for z-normalisation, float32.

    ``*_std`` is stored exactly as in the reference ``norm_stats.npz``: the +1e-6 was already added
    when it was computed (nose dimensions have std exactly 1e-6), so it must not be added again.
    """

    face_mean: F32Array
    face_std: F32Array
    audio_mean: F32Array
    audio_std: F32Array

    def __post_init__(self) -> None:
        # The dims follow the bundle's declared extractors (326/1024 for the reference family); the
        # bundle loader checks them against the manifest.
        face_dim = int(np.asarray(self.face_mean).size)
        audio_dim = int(np.asarray(self.audio_mean).size)
        dims = {"face_mean": face_dim, "face_std": face_dim, "audio_mean": audio_dim, "audio_std": audio_dim}
        for key, dim in dims.items():
            arr = _as_vector(getattr(self, key), dim, key)
            arr.flags.writeable = False
            object.__setattr__(self, key, arr)
        if np.any(self.face_std <= 0) or np.any(self.audio_std <= 0):
            raise ValueError("norm stats: std must be strictly positive")

    @staticmethod
    def _normalise(x: npt.ArrayLike, mask: npt.ArrayLike, mean: F32Array, std: F32Array) -> F32Array:
        xa = np.asarray(x, dtype=np.float32)
        ma = np.asarray(mask, dtype=np.float32)
        if xa.ndim != 2 or xa.shape[1] != mean.shape[0]:
            raise ValueError(f"expected (T, {mean.shape[0]}) input, got {xa.shape}")
        if ma.shape != (xa.shape[0],):
            raise ValueError(f"mask must be ({xa.shape[0]},), got {ma.shape}")
        z: F32Array = ((xa - mean) / std) * ma[:, None]
        return z

    def normalise_face(self, x: npt.ArrayLike, mask: npt.ArrayLike) -> F32Array:
        """(T, 326) raw face vectors → z-scores, rows with mask 0 zeroed (float32)."""
        return self._normalise(x, mask, self.face_mean, self.face_std)

    def normalise_audio(self, x: npt.ArrayLike, mask: npt.ArrayLike) -> F32Array:
        """(T, 1024) raw audio embeddings → z-scores, rows with mask 0 zeroed (float32)."""
        return self._normalise(x, mask, self.audio_mean, self.audio_std)

    @property
    def face_dim(self) -> int:
        return int(self.face_mean.shape[0])

    @property
    def audio_dim(self) -> int:
        return int(self.audio_mean.shape[0])

    def observe_audio(self, vector: npt.ArrayLike) -> None:
        """Fixed training statistics learn nothing from a participant (see :class:`Normaliser`)."""

    def to_arrays(self) -> dict[str, F32Array]:
        """Flat float32 vectors keyed ``face_mean``, ``face_std``, ``audio_mean``, ``audio_std``."""
        return {key: np.array(getattr(self, key), dtype=np.float32) for key in _NORM_KEYS}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, npt.ArrayLike]) -> NormStats:
        """Inverse of :meth:`to_arrays`; any shape holding the right number of values is accepted."""
        missing = [key for key in _NORM_KEYS if key not in arrays]
        if missing:
            raise ValueError(f"norm stats: missing arrays {missing}")
        return cls(**{key: np.asarray(arrays[key], dtype=np.float32) for key in _NORM_KEYS})

    @classmethod
    def from_hoovik_npz(cls, path: str | os.PathLike[str]) -> NormStats:
        """Read the reference ``extracted_dataset/norm_stats.npz``.

        Arrays: ``Xf_mean``/``Xf_std`` (1,1,326) and ``Xa_mean``/``Xa_std`` (1,1,1024), float32.
        """
        p = Path(path)
        with np.load(p, allow_pickle=False) as data:
            missing = [k for k in ("Xf_mean", "Xf_std", "Xa_mean", "Xa_std") if k not in data.files]
            if missing:
                raise ValueError(f"{p}: missing arrays {missing}")
            try:
                return cls(
                    face_mean=data["Xf_mean"],
                    face_std=data["Xf_std"],
                    audio_mean=data["Xa_mean"],
                    audio_std=data["Xa_std"],
                )
            except ValueError as exc:
                raise ValueError(f"{p}: {exc}") from exc


class RollingSequence:
    """The last ``maxlen`` embeddings of one modality of one participant, oldest first.

    Not thread-safe: one owner (the participant's engine state) appends and assembles.
    """

    def __init__(self, dim: int, maxlen: int = SEQ_LEN) -> None:
        if dim <= 0 or maxlen <= 0:
            raise ValueError("dim and maxlen must be positive")
        self.dim = dim
        self.maxlen = maxlen
        self._items: deque[tuple[F32Array, float]] = deque(maxlen=maxlen)
        self._last_arrival: float | None = None

    def append(self, vector: npt.ArrayLike, media_time: float, *, arrival_time: float | None = None) -> None:
        """Add one embedding (copied, float32). Rejects a wrong size or non-finite values.

        ``media_time`` is the stream time of the frame/audio the embedding came from;
        ``arrival_time`` (default: ``media_time``) is the clock the staleness rule is judged on.
        """
        if not math.isfinite(media_time):
            raise ValueError("media_time must be finite")
        vec = _as_vector(vector, self.dim, "embedding").copy()
        vec.flags.writeable = False
        self._items.append((vec, float(media_time)))
        self._last_arrival = float(media_time if arrival_time is None else arrival_time)

    def clear(self) -> None:
        self._items.clear()
        self._last_arrival = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def last_time(self) -> float | None:
        """Arrival time of the newest held embedding (None when empty): what staleness is measured on."""
        return self._last_arrival if self._items else None

    @property
    def newest_media_time(self) -> float | None:
        """Media time of the newest held embedding (None when empty)."""
        return self._items[-1][1] if self._items else None

    def assemble(self) -> tuple[F32Array, F32Array]:
        """A (maxlen, dim) window and (maxlen,) mask, front-padded with copies of the oldest embedding.

        Mask is 1 on the last ``n`` positions only. Empty → zeros with a zero mask.
        """
        x = np.zeros((self.maxlen, self.dim), dtype=np.float32)
        mask = np.zeros(self.maxlen, dtype=np.float32)
        n = len(self._items)
        if n == 0:
            return x, mask
        pad = self.maxlen - n
        x[:pad] = self._items[0][0]
        for i, (vec, _) in enumerate(self._items):
            x[pad + i] = vec
        mask[pad:] = 1.0
        return x, mask


def assemble_inputs(
    face_seq: RollingSequence,
    audio_seq: RollingSequence,
    face_active: bool,
    audio_active: bool,
    norm: Normaliser,
) -> tuple[F32Array, F32Array, F32Array, F32Array]:
    """Build the predictor input ``(xf (T,F), xa (T,A), fm (T,), am (T,))`` like the reference server.

    F and A are the bundle's declared extractor dims (326 and 1024 for the reference family).

    ``*_active`` is the caller's modality decision (enabled, fresh within 0.4 s); an inactive or
    empty modality becomes a zero window with a zero mask.
    """
    if face_seq.dim != norm.face_dim or audio_seq.dim != norm.audio_dim:
        raise ValueError(
            f"sequence dims {face_seq.dim}/{audio_seq.dim} differ from the normaliser's "
            f"{norm.face_dim}/{norm.audio_dim}"
        )
    if face_seq.maxlen != audio_seq.maxlen:
        raise ValueError("face and audio sequences must have the same length")
    steps = face_seq.maxlen

    def window(seq: RollingSequence, active: bool) -> tuple[F32Array, F32Array]:
        if active and len(seq):
            return seq.assemble()
        return np.zeros((steps, seq.dim), dtype=np.float32), np.zeros(steps, dtype=np.float32)

    xf_raw, fm = window(face_seq, face_active)
    xa_raw, am = window(audio_seq, audio_active)
    return norm.normalise_face(xf_raw, fm), norm.normalise_audio(xa_raw, am), fm, am
