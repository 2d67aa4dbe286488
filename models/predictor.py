"""The one predictor API shared by the live engine, replay and training evaluation.

``Predictor.predict_batch`` takes normalised sequences for B participants (or samples) with their
masks and runs each model once for the whole batch: the EmotionTransformer, the tabular model
(8,149-d features → median fill → PCA → XGBoost) and the anomaly detectors (9,452-d features →
scaler → PCA → IsolationForest, rows grouped by detector). Rows that fail validation get an error
prediction and do not affect the others, as the original returned an error dict per call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.anomaly import AnomalyResult, build_anomaly_features
from models.bundle import Bundle
from models.constants import AUDIO_DIM, CLASS_NAMES, FACE_DIM, NUM_CLASSES
from models.ensemble import ensemble_weights, fuse, validate_inputs
from models.tabular import build_tabular_features
from models.transformer import TransformerRunner


@dataclass(frozen=True)
class Prediction:
    status: str  # "ok" | "error"
    error: str | None
    profile: str | None
    probs: np.ndarray | None  # (6,) float32, unrounded ensemble probabilities
    label: str | None
    label_index: int | None
    confidence: float | None
    fusion_logits: np.ndarray | None
    p_modal: np.ndarray | None
    p_tabular: np.ndarray | None
    anomaly: AnomalyResult | None
    weights: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly view (used by ``hoovik-bot models predict``)."""

        def arr(a: np.ndarray | None) -> list[float] | None:
            return None if a is None else [float(x) for x in a]

        return {
            "status": self.status,
            "error": self.error,
            "profile": self.profile,
            "label": self.label,
            "confidence": self.confidence,
            "probs": arr(self.probs),
            "probs_4dp": None
            if self.probs is None
            else {n: round(float(p), 4) for n, p in zip(CLASS_NAMES, self.probs, strict=True)},
            "fusion_logits": arr(self.fusion_logits),
            "p_modal": arr(self.p_modal),
            "p_xgb": arr(self.p_tabular),
            "ensemble_weights": None if self.weights is None else list(self.weights),
            "anomaly": None
            if self.anomaly is None
            else {
                "score": self.anomaly.score,
                "is_anomaly": self.anomaly.is_anomaly,
                "detector": self.anomaly.detector,
                "threshold": self.anomaly.threshold,
            },
        }


def profile_of(face_present: bool, audio_present: bool) -> str:
    if face_present and audio_present:
        return "both"
    return "audio_only" if audio_present else "video_only"


def error_prediction(message: str) -> Prediction:
    """The prediction of a row that failed validation (the original returned an error dict)."""
    return Prediction("error", message, None, None, None, None, None, None, None, None, None)


@dataclass(frozen=True)
class ValidRows:
    """The rows of a batch that passed validation, as float32 arrays, and which modalities they have."""

    index: list[int]
    xf: np.ndarray
    xa: np.ndarray
    fm: np.ndarray
    am: np.ndarray
    face_present: np.ndarray
    audio_present: np.ndarray


def split_batch(
    xf: np.ndarray,
    xa: np.ndarray,
    fm: np.ndarray,
    am: np.ndarray,
    face_dim: int = FACE_DIM,
    audio_dim: int = AUDIO_DIM,
) -> tuple[list[Prediction | None], ValidRows | None]:
    """Validate every row (any family's dims): error predictions for the bad rows, the rest batched.

    A bad row never affects the others; every family's predictor starts here.
    """
    results: list[Prediction | None] = [None] * len(xf)
    valid: list[int] = []
    for i in range(len(xf)):
        err = validate_inputs(xf[i], xa[i], fm[i], am[i], face_dim, audio_dim)
        if err is not None:
            results[i] = error_prediction(err)
        else:
            valid.append(i)
    if not valid:
        return results, None
    idx = np.asarray(valid)
    bfm = np.asarray(fm, dtype=np.float32)[idx]
    bam = np.asarray(am, dtype=np.float32)[idx]
    rows = ValidRows(
        valid,
        np.asarray(xf, dtype=np.float32)[idx],
        np.asarray(xa, dtype=np.float32)[idx],
        bfm,
        bam,
        bfm.sum(axis=1) > 0,
        bam.sum(axis=1) > 0,
    )
    return results, rows


class Predictor:
    """Batched inference over a loaded bundle. Not thread-safe: one inference thread owns it."""

    def __init__(self, bundle: Bundle, *, torch_threads: int | None = None, skip_unweighted: bool = False) -> None:
        """``skip_unweighted``: skip the tabular model for rows where its fusion weight is 0 (face
        only: the reference's modality collapse gives the transformer all the weight). Their fused
        probabilities are bit-identical; only ``p_tabular`` is then None. The live engine sets it,
        because the 8,149-d feature build and the XGBoost walk are most of a batch's cost; golden
        tests and training evaluation, which read ``p_tabular`` of every row, keep the default."""
        self.bundle = bundle
        self.skip_unweighted = skip_unweighted
        self.runner = TransformerRunner.from_state_dict(
            bundle.transformer_state, bundle.transformer_config, num_threads=torch_threads
        )
        self.tabular = bundle.tabular
        self.anomaly = bundle.anomaly
        self.ensemble = bundle.ensemble

    def predict(self, xf: np.ndarray, xa: np.ndarray, fm: np.ndarray, am: np.ndarray) -> Prediction:
        """One sample, shapes (10,326), (10,1024), (10,), (10,)."""
        error = validate_inputs(xf, xa, fm, am)
        if error is not None:
            return error_prediction(error)
        return self.predict_batch(xf[None], xa[None], fm[None], am[None])[0]

    def predict_batch(self, xf: np.ndarray, xa: np.ndarray, fm: np.ndarray, am: np.ndarray) -> list[Prediction]:
        """B samples at once: (B,10,326), (B,10,1024), (B,10), (B,10); normalised inputs."""
        results, rows = split_batch(xf, xa, fm, am)
        if rows is not None:
            valid = rows.index
            bf, ba, bfm, bam = rows.xf, rows.xa, rows.fm, rows.am
            face_present, audio_present = rows.face_present, rows.audio_present
            profiles = [profile_of(bool(f), bool(a)) for f, a in zip(face_present, audio_present, strict=True)]
            anomaly = self.anomaly.score_batch(build_anomaly_features(bf, ba, bfm, bam), profiles)
            logits = self.runner.predict_logits(bf, ba, bfm, bam)
            # Rows whose tabular weight is 0 (face only) need no tabular prediction when skipping.
            tab_rows = np.flatnonzero(audio_present) if self.skip_unweighted else np.arange(len(valid))
            p_tab = np.zeros((len(valid), NUM_CLASSES), dtype=np.float32)
            if len(tab_rows):
                features = build_tabular_features(bf[tab_rows], ba[tab_rows], bfm[tab_rows], bam[tab_rows])
                p_tab[tab_rows] = np.asarray(self.tabular.predict_proba(features), dtype=np.float32)
            has_tab = np.zeros(len(valid), dtype=bool)
            has_tab[tab_rows] = True
            p_modal, probs = fuse(
                logits,
                p_tab,
                face_present,
                audio_present,
                self.ensemble.temperature,
                self.ensemble.w_modal,
                self.ensemble.w_xgb,
            )
            for j, i in enumerate(valid):
                k = int(np.argmax(probs[j]))
                fp, ap = bool(face_present[j]), bool(audio_present[j])
                w = ensemble_weights(fp, ap, self.ensemble.w_modal, self.ensemble.w_xgb)
                results[i] = Prediction(
                    status="ok",
                    error=None,
                    profile=profiles[j],
                    probs=probs[j],
                    label=CLASS_NAMES[k],
                    label_index=k,
                    confidence=float(probs[j][k]),
                    fusion_logits=logits[j],
                    p_modal=p_modal[j],
                    p_tabular=p_tab[j] if has_tab[j] else None,
                    anomaly=anomaly[j],
                    weights=(float(w[0]), float(w[1])),
                )
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]


__all__ = ["NUM_CLASSES", "Prediction", "Predictor", "profile_of"]
