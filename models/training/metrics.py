"""Classification metrics in plain numpy, shared by training, calibration and the test report.

Balanced accuracy is the mean recall over the classes present in ``y_true`` (scikit-learn's
definition), so a split missing a class is not penalised for it.
"""

from __future__ import annotations

import numpy as np

from models.constants import CLASS_NAMES, NUM_CLASSES


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n: int = NUM_CLASSES) -> np.ndarray:
    """Counts (n, n): row = true class, column = predicted class."""
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return cm


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true = np.asarray(y_true)
    return float(np.mean(y_true == np.asarray(y_pred))) if y_true.size else float("nan")


def per_class_recall(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float | None]:
    """Recall per class name; None for a class absent from ``y_true``."""
    cm = confusion_matrix(y_true, y_pred)
    support = cm.sum(axis=1)
    return {name: (float(cm[i, i] / support[i]) if support[i] else None) for i, name in enumerate(CLASS_NAMES)}


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    recalls = [r for r in per_class_recall(y_true, y_pred).values() if r is not None]
    return float(np.mean(recalls)) if recalls else float("nan")


def normalised_confusion(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Rows divided by their totals (recall on the diagonal); empty rows stay 0."""
    cm = confusion_matrix(y_true, y_pred).astype(np.float64)
    totals = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)


def nll(probs: np.ndarray, y_true: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class (probabilities clipped at 1e-12)."""
    p = np.asarray(probs, np.float64)[np.arange(len(y_true)), np.asarray(y_true, np.int64)]
    return float(-np.mean(np.log(np.clip(p, 1e-12, None)))) if len(y_true) else float("nan")


def summary(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, object]:
    """n, accuracy, balanced accuracy and per-class recall in one JSON-able dict."""
    return {
        "n": int(np.asarray(y_true).size),
        "accuracy": accuracy(y_true, y_pred),
        "balanced_accuracy": balanced_accuracy(y_true, y_pred),
        "per_class_recall": per_class_recall(y_true, y_pred),
    }
