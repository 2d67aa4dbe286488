"""Per-profile anomaly detectors (docs/training.md, "Anomaly detectors"): StandardScaler → PCA → IsolationForest,
threshold on val.

One detector per profile (both / audio_only / video_only) plus a global fallback fitted on every
train row. Each is stored as :class:`models.anomaly.AnomalyDetector` with the forest flattened to
:class:`models.forest.IsolationForestArrays` — arrays, no pickles — and thresholds are computed
with that very object, so the val flag rate the report shows is what serving will produce.

Differences from the original, both to remove train/serve skew:

* **Profiles from the masks**, as the predictor picks the detector, not from the file's flag.
* **One scaler, fitted on the rows it serves.** The original standardised RAVDESS and CREMA-D rows
  separately, fitted the forest on that, and then fitted a global scaler *on the already
  standardised data* for inference — a near-identity applied to raw features the forest had never
  seen unscaled. We fit the global scaler on the raw features and the forest on its output: the
  exact inference path.

The threshold is the ``target_fpr`` quantile (10 %) of the profile's val scores, so 10 % of normal
val clips are flagged by construction. A profile with fewer than ``min_rows`` train rows gets no
detector of its own (the global fallback serves it); one without val rows takes its threshold
from train scores, and the metrics say so.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.preprocessing import StandardScaler

from models.anomaly import GLOBAL_FALLBACK, AnomalyDetector, AnomalyModel, build_anomaly_features, profiles_from_masks
from models.constants import ANOMALY_DIM, PROFILES
from models.forest import IsolationForestArrays
from models.training.config import AnomalyConfig
from models.training.dataset import FeatureDataset
from models.training.runtime import MetricsLog

log = logging.getLogger(__name__)

_CHUNK = 512


def anomaly_inputs(ds: FeatureDataset, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows, 9452) anomaly features of a split and each row's profile from its masks."""
    rows = ds.indices(split)
    feats, profiles = [], []
    for start in range(0, len(rows), _CHUNK):
        xf, xa, fm, am = ds.normalised(rows[start : start + _CHUNK])
        feats.append(np.atleast_2d(build_anomaly_features(xf, xa, fm, am)))
        profiles += profiles_from_masks(fm, am)
    x = np.concatenate(feats) if feats else np.zeros((0, ANOMALY_DIM), np.float32)
    return x, np.asarray(profiles, dtype=str)


def fit_detector(name: str, x_train: np.ndarray, n_components: int, n_estimators: int, seed: int) -> AnomalyDetector:
    """Scaler on the raw rows → PCA (clamped to the rows available) → IsolationForest as arrays."""
    scaler = StandardScaler().fit(x_train)
    mean32 = scaler.mean_.astype(np.float32)
    scale32 = scaler.scale_.astype(np.float32)
    scaled = (x_train.astype(np.float32) - mean32) / scale32  # AnomalyDetector.transform's arithmetic
    k = max(1, min(n_components, scaled.shape[0], scaled.shape[1]))
    pca = PCA(n_components=k, random_state=seed).fit(scaled)
    components = pca.components_.astype(np.float32)
    pca_mean = pca.mean_.astype(np.float32)
    projected = scaled @ components.T - pca_mean.reshape(1, -1) @ components.T
    forest = IsolationForest(n_estimators=n_estimators, contamination="auto", random_state=seed).fit(projected)
    return AnomalyDetector(
        name=name,
        scaler_mean=scaler.mean_,
        scaler_scale=scaler.scale_,
        pca_components=components,
        pca_mean=pca_mean,
        forest=IsolationForestArrays.from_sklearn(forest),
        threshold=0.0,
    )


def train_anomaly(
    ds: FeatureDataset, cfg: AnomalyConfig, seed: int, log_: MetricsLog | None = None
) -> tuple[AnomalyModel, dict[str, Any]]:
    """Fit every detector with enough rows; thresholds at the target false-positive rate on val."""
    mlog = log_ or MetricsLog()
    started = time.monotonic()
    x_tr, prof_tr = anomaly_inputs(ds, "train")
    x_va, prof_va = anomaly_inputs(ds, "val")
    detectors: dict[str, AnomalyDetector] = {}
    per: dict[str, Any] = {}
    for name in (*PROFILES, GLOBAL_FALLBACK):
        tr_rows = np.ones(len(prof_tr), bool) if name == GLOBAL_FALLBACK else prof_tr == name
        va_rows = np.ones(len(prof_va), bool) if name == GLOBAL_FALLBACK else prof_va == name
        n_tr = int(tr_rows.sum())
        if n_tr < cfg.min_rows and not (name == GLOBAL_FALLBACK and n_tr >= 2):
            per[name] = {"skipped": f"{n_tr} train rows < min_rows {cfg.min_rows}; served by the global fallback"}
            continue
        det = fit_detector(name, x_tr[tr_rows], cfg.pca.get(name, 256), cfg.n_estimators, seed)
        source = "val" if va_rows.any() else "train"
        ref = x_va[va_rows] if va_rows.any() else x_tr[tr_rows]
        scores, _ = det.score(ref)
        det.threshold = float(np.percentile(scores, 100.0 * cfg.target_fpr))
        _, flags = det.score(ref)
        detectors[name] = det
        per[name] = {
            "train_rows": n_tr,
            "val_rows": int(va_rows.sum()),
            "pca_components": det.n_components,
            "threshold": det.threshold,
            "threshold_from": source,
            "flag_rate": float(np.mean(flags)),
        }
    if GLOBAL_FALLBACK not in detectors:
        raise ValueError("the anomaly global fallback needs at least 2 train rows")
    metrics = {"detectors": per, "target_fpr": cfg.target_fpr, "seconds": round(time.monotonic() - started, 3)}
    mlog.write("anomaly_done", **metrics)
    return AnomalyModel(detectors), metrics
