"""Evaluation of a bundle on a dataset split, through the live predictor.

Every number in the report comes from :meth:`models.predictor.Predictor.predict_batch` — the call
the bot makes — on the split normalised with the *bundle's* norm stats, so what is measured is
what would be served: the transformer, the tabular model, the fusion with its modality collapse
and the anomaly detectors, end to end.

Besides the natural profile of each clip, the report measures each single-modality path on the
clips that have both (audio removed → video_only, face removed → audio_only): a direct check that
the model still works when a participant's camera or microphone goes away.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from models.bundle import Bundle
from models.constants import NUM_CLASSES, PROFILES
from models.predictor import Prediction, Predictor
from models.training.dataset import FeatureDataset
from models.training.metrics import accuracy, balanced_accuracy, confusion_matrix, normalised_confusion, summary


@dataclass
class SplitPredictions:
    """Per row: true label, predicted label (−1 on a predictor error), profile and anomaly flag."""

    y_true: np.ndarray
    y_pred: np.ndarray
    profiles: np.ndarray
    anomaly: np.ndarray
    fusion_logits: np.ndarray
    p_tabular: np.ndarray
    errors: list[str]


def _rows(values: list[np.ndarray | None]) -> np.ndarray:
    """(n, 6) float32; an error row (None) becomes zeros."""
    out = np.zeros((len(values), NUM_CLASSES), np.float32)
    for i, v in enumerate(values):
        if v is not None:
            out[i] = v
    return out


def predict_rows(
    predictor: Predictor,
    xf: np.ndarray,
    xa: np.ndarray,
    fm: np.ndarray,
    am: np.ndarray,
    y: np.ndarray,
    batch_size: int = 256,
) -> SplitPredictions:
    """Run ``predict_batch`` in chunks and collect what the metrics need."""
    preds: list[Prediction] = []
    for start in range(0, len(y), batch_size):
        sl = slice(start, start + batch_size)
        preds += predictor.predict_batch(xf[sl], xa[sl], fm[sl], am[sl])
    return SplitPredictions(
        y_true=np.asarray(y, np.int64),
        y_pred=np.asarray([p.label_index if p.label_index is not None else -1 for p in preds], np.int64),
        profiles=np.asarray([p.profile or "error" for p in preds], dtype=str),
        anomaly=np.asarray([bool(p.anomaly.is_anomaly) if p.anomaly else False for p in preds]),
        fusion_logits=_rows([p.fusion_logits for p in preds]),
        p_tabular=_rows([p.p_tabular for p in preds]),
        errors=[p.error for p in preds if p.error],
    )


def predict_split(predictor: Predictor, ds: FeatureDataset, split: str, batch_size: int = 256) -> SplitPredictions:
    """A dataset split through the predictor, normalised with the predictor's bundle stats."""
    rows = ds.indices(split)
    xf, xa, fm, am = ds.normalised(rows, predictor.bundle.norm)
    return predict_rows(predictor, xf, xa, fm, am, ds.label[rows], batch_size)


def _subset_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    return {"n": len(y), "accuracy": accuracy(y, pred), "balanced_accuracy": balanced_accuracy(y, pred)}


@dataclass
class Evaluation:
    metrics: dict[str, Any]
    confusion: np.ndarray  # counts, rows = true class
    confusion_normalised: np.ndarray


def evaluate_bundle(bundle: Bundle, ds: FeatureDataset, split: str = "test", batch_size: int = 256) -> Evaluation:
    """Every test metric of the report, computed from the live predictor's outputs.

    Accuracy, balanced accuracy, per-class recall, accuracy per profile, the anomaly flag rate per
    profile, the single-modality ablations and the confusion matrix (counts and row-normalised).
    """
    predictor = Predictor(bundle)
    out = predict_split(predictor, ds, split, batch_size)
    ok = out.y_pred >= 0
    y, pred = out.y_true, out.y_pred
    metrics: dict[str, Any] = {"split": split, "errors": len(out.errors), **summary(y, pred)}
    metrics["profiles"] = {
        p: _subset_metrics(y[out.profiles == p], pred[out.profiles == p]) for p in PROFILES if np.any(out.profiles == p)
    }
    metrics["anomaly_flag_rate"] = {
        p: float(np.mean(out.anomaly[out.profiles == p])) for p in PROFILES if np.any(out.profiles == p)
    }
    metrics["anomaly_flag_rate_all"] = float(np.mean(out.anomaly[ok])) if ok.any() else None
    metrics["ablation"] = _ablations(predictor, ds, split, batch_size)
    return Evaluation(
        metrics=metrics,
        confusion=confusion_matrix(y[ok], pred[ok]),
        confusion_normalised=normalised_confusion(y[ok], pred[ok]),
    )


def _ablations(predictor: Predictor, ds: FeatureDataset, split: str, batch_size: int) -> dict[str, Any]:
    """Clips with both modalities, evaluated with one modality removed (as when a device turns off)."""
    rows = ds.indices(split)
    xf, xa, fm, am = ds.normalised(rows, predictor.bundle.norm)
    both = (fm.sum(axis=1) > 0) & (am.sum(axis=1) > 0)
    if not both.any():
        return {}
    xf, xa, fm, am, y = xf[both], xa[both], fm[both], am[both], ds.label[rows][both]
    video = predict_rows(predictor, xf, np.zeros_like(xa), fm, np.zeros_like(am), y, batch_size)
    audio = predict_rows(predictor, np.zeros_like(xf), xa, np.zeros_like(fm), am, y, batch_size)
    return {
        "both_as_video_only": _subset_metrics(y, video.y_pred),
        "both_as_audio_only": _subset_metrics(y, audio.y_pred),
    }
