"""The starter family's per-participant normaliser: face as is, audio by the speaker's own statistics.

Why: speakers differ far more in pitch, loudness and timbre than one speaker's emotions move those
features, so a model that sees raw log-mel statistics mostly learns who is speaking. Normalising
each participant's audio features by that participant's own running mean and std (with the
training set's statistics as a prior worth ``prior_count`` windows, so the first windows are sane)
removes most of that. The engine, replay and training all create one of these per participant (per
actor in training) and feed it every audio vector it embeds, in arrival order.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from models.starter.speaker_norm import SpeakerNormaliser


class StarterNormaliser:
    """One participant's :class:`models.sequence.Normaliser` for the starter family."""

    def __init__(self, prior_mean: np.ndarray, prior_std: np.ndarray, prior_count: float, face_dim: int) -> None:
        self.speaker = SpeakerNormaliser(prior_mean, prior_std, prior_count)
        self._face_dim = face_dim
        self._audio_dim = int(np.asarray(prior_mean).shape[0])

    @property
    def face_dim(self) -> int:
        return self._face_dim

    @property
    def audio_dim(self) -> int:
        return self._audio_dim

    def observe_audio(self, vector: npt.ArrayLike) -> None:
        self.speaker.update(np.asarray(vector, dtype=np.float32))

    def normalise_face(self, x: npt.ArrayLike, mask: npt.ArrayLike) -> np.ndarray:
        xa = np.asarray(x, dtype=np.float32)
        out: np.ndarray = xa * np.asarray(mask, dtype=np.float32)[:, None]
        return out

    def normalise_audio(self, x: npt.ArrayLike, mask: npt.ArrayLike) -> np.ndarray:
        xa = np.asarray(x, dtype=np.float32)
        out: np.ndarray = (self.speaker.normalise(xa) * np.asarray(mask, dtype=np.float32)[:, None]).astype(np.float32)
        return out
