"""The starter family's batched predictor: FER face branch + log-mel audio head, fused as the reference.

Inputs are what the engine, replay and training assemble for every family: ``xf (B,10,7)`` FER
probabilities per sampled frame, ``xa (B,10,D)`` audio features already normalised by the
participant's own running statistics, and the masks.

* Face branch: the mean over the valid frames of ``log p`` (a geometric mean of the frame
  probabilities, so one confident frame does not outvote the rest), surprise dropped and the six
  remaining classes put in our order (see :func:`models.starter.face.fer_to_six`).
* Audio branch: the head's logits over the pooled sequence, softmax at its fitted temperature.
* Fusion: the reference's :func:`models.ensemble.fuse`, with the face logits in the role of the
  transformer's and the audio probabilities in the role of the tabular model's, so the modality
  collapse is the reference's too: face only → face alone, audio only → audio alone, both → the
  fitted weights.
"""

from __future__ import annotations

import numpy as np

from models.anomaly import AnomalyResult
from models.constants import CLASS_NAMES
from models.ensemble import ensemble_weights, fuse, softmax_with_temperature
from models.predictor import Prediction, profile_of, split_batch
from models.starter.audio_head import pool_sequence
from models.starter.bundle import StarterBundle
from models.starter.face import fer_to_six

_EPS = 1e-6
ANOMALY_DETECTOR = "starter_audio"


def face_logits(xf: np.ndarray, fm: np.ndarray) -> np.ndarray:
    """(B,10,7) FER probabilities + (B,10) mask → (B,6) log-probabilities averaged over valid frames."""
    p6 = fer_to_six(np.clip(np.asarray(xf, dtype=np.float32), 0.0, 1.0))
    logp = np.log(p6 + _EPS)
    w = np.asarray(fm, dtype=np.float32)
    n = np.maximum(w.sum(axis=1, keepdims=True), 1.0)
    out: np.ndarray = ((logp * w[:, :, None]).sum(axis=1) / n).astype(np.float32)
    return out


class StarterPredictor:
    """Batched inference over a loaded starter bundle; pure numpy (plus one torch softmax)."""

    def __init__(self, bundle: StarterBundle) -> None:
        self.bundle = bundle
        self.face_dim = bundle.face.dim
        self.audio_dim = bundle.audio.dim

    def predict(self, xf: np.ndarray, xa: np.ndarray, fm: np.ndarray, am: np.ndarray) -> Prediction:
        return self.predict_batch(xf[None], xa[None], fm[None], am[None])[0]

    def predict_batch(self, xf: np.ndarray, xa: np.ndarray, fm: np.ndarray, am: np.ndarray) -> list[Prediction]:
        results, rows = split_batch(xf, xa, fm, am, self.face_dim, self.audio_dim)
        if rows is not None:
            valid = rows.index
            bf, ba, bfm, bam = rows.xf, rows.xa, rows.fm, rows.am
            face_present, audio_present = rows.face_present, rows.audio_present
            fusion = self.bundle.fusion
            f_logits = face_logits(bf, bfm)
            pooled = pool_sequence(ba, bam)
            a_logits = self.bundle.head.logits(pooled)
            p_audio = softmax_with_temperature(a_logits, fusion.temperature_audio)
            p_face, probs = fuse(
                f_logits, p_audio, face_present, audio_present, fusion.temperature_face, fusion.w_face, fusion.w_audio
            )
            scores = self.bundle.anomaly.score(pooled)
            for j, i in enumerate(valid):
                fp, ap = bool(face_present[j]), bool(audio_present[j])
                k = int(np.argmax(probs[j]))
                anomaly = None
                if ap:
                    s = float(scores[j])
                    t = self.bundle.anomaly.threshold
                    anomaly = AnomalyResult(score=s, is_anomaly=s < t, detector=ANOMALY_DETECTOR, threshold=t)
                w = ensemble_weights(fp, ap, fusion.w_face, fusion.w_audio)
                results[i] = Prediction(
                    status="ok",
                    error=None,
                    profile=profile_of(fp, ap),
                    probs=probs[j],
                    label=CLASS_NAMES[k],
                    label_index=k,
                    confidence=float(probs[j][k]),
                    fusion_logits=f_logits[j],
                    p_modal=p_face[j],
                    p_tabular=p_audio[j],
                    anomaly=anomaly,
                    weights=(float(w[0]), float(w[1])),
                )
        return [r for r in results if r is not None]
