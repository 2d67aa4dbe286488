"""The tabular branch (docs/training.md, "XGBoost"): 8,149-d features → median fill → PCA → XGBoost with early stopping.

Features come from :func:`models.tabular.build_tabular_features` on the normalised sequences, the
function the live predictor calls. Two deliberate differences from the original's training script:

* **Modality one-hot from the masks, not the structural flag.** The original trained on the
  file's flag but served with the masks' profile, so a "both" clip whose face was never found was
  trained as *both* and served as *audio_only*. Training on what serving computes removes the skew.
* **No explicit zeroing of zero-variance columns.** The original zeroed them in training but not at
  inference; harmless there because they were all 0, but a column constant at another value would
  differ between the two. PCA centres constant columns away by itself, so we leave them.

Columns with no value at all in train get median 0 (:class:`TabularModel` needs finite medians).
PCA keeps ``min(512, train rows, 8149)`` components: a PCA cannot have more components than rows,
so small datasets get fewer (the booster's input width is stored in the bundle).

Sample weights: (1/√count_c) per class normalised to mean 1 over the train rows, ×1.5 for fearful.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np
import xgboost
from sklearn.decomposition import PCA

from models.constants import CLASS_NAMES, NUM_CLASSES
from models.tabular import TabularModel, build_tabular_features
from models.training.config import XGBConfig
from models.training.dataset import FeatureDataset
from models.training.metrics import accuracy, balanced_accuracy
from models.training.runtime import MetricsLog

log = logging.getLogger(__name__)

FEARFUL = CLASS_NAMES.index("fearful")
_CHUNK = 512


def tabular_features(ds: FeatureDataset, split: str) -> np.ndarray:
    """(rows, 8149) float32 features of a split, built in chunks to bound memory."""
    rows = ds.indices(split)
    out = []
    for start in range(0, len(rows), _CHUNK):
        xf, xa, fm, am = ds.normalised(rows[start : start + _CHUNK])
        out.append(np.atleast_2d(build_tabular_features(xf, xa, fm, am)))
    return np.concatenate(out) if out else np.zeros((0, 8149), np.float32)


def column_medians(x: np.ndarray) -> np.ndarray:
    """Per-column nan-median; all-NaN columns → 0."""
    out = np.zeros(x.shape[1], dtype=np.float32)
    has = ~np.all(np.isnan(x), axis=0)
    if has.any():
        out[has] = np.nanmedian(x[:, has], axis=0).astype(np.float32)
    return out


def sample_weights(y: np.ndarray, fearful_boost: float) -> np.ndarray:
    """(1/√count_c) normalised to mean 1 over the rows, then ×``fearful_boost`` for fearful rows."""
    counts = np.bincount(y, minlength=NUM_CLASSES).astype(np.float64)
    w = 1.0 / np.sqrt(np.maximum(counts[y], 1.0))
    w = w / w.mean()
    w[y == FEARFUL] *= fearful_boost
    return w.astype(np.float32)


def project(filled: np.ndarray, components: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """The PCA projection exactly as :meth:`TabularModel.transform` computes it (float32)."""
    comps = np.ascontiguousarray(components, np.float32)
    out: np.ndarray = filled.astype(np.float32) @ comps.T
    out -= np.asarray(mean, np.float32).reshape(1, -1) @ comps.T
    return out


def booster_params(cfg: XGBConfig, seed: int) -> dict[str, Any]:
    return {
        "objective": "multi:softprob",
        "num_class": NUM_CLASSES,
        "max_depth": cfg.max_depth,
        "eta": cfg.learning_rate,
        "subsample": cfg.subsample,
        "colsample_bytree": cfg.colsample_bytree,
        "colsample_bylevel": cfg.colsample_bylevel,
        "min_child_weight": cfg.min_child_weight,
        "gamma": cfg.gamma,
        "alpha": cfg.reg_alpha,
        "lambda": cfg.reg_lambda,
        "tree_method": "hist",
        "eval_metric": "mlogloss",
        "seed": seed,
        "nthread": cfg.nthread or (os.cpu_count() or 1),
    }


def train_tabular(
    ds: FeatureDataset, cfg: XGBConfig, seed: int, log_: MetricsLog | None = None
) -> tuple[TabularModel, dict[str, Any]]:
    """Fit medians, PCA and the booster on train; early-stop on val; returns the model and metrics."""
    mlog = log_ or MetricsLog()
    started = time.monotonic()
    x_tr, x_va = tabular_features(ds, "train"), tabular_features(ds, "val")
    y_tr, y_va = ds.label[ds.indices("train")], ds.label[ds.indices("val")]
    medians = column_medians(x_tr)
    filled_tr = np.where(np.isnan(x_tr), medians, x_tr)
    filled_va = np.where(np.isnan(x_va), medians, x_va)
    k = max(1, min(cfg.pca_components, filled_tr.shape[0], filled_tr.shape[1]))
    if k < cfg.pca_components:
        log.info("PCA: %d components instead of %d (only %d train rows)", k, cfg.pca_components, len(filled_tr))
    pca = PCA(n_components=k, random_state=seed).fit(filled_tr)
    components = pca.components_.astype(np.float32)
    mean = pca.mean_.astype(np.float32)
    p_tr, p_va = project(filled_tr, components, mean), project(filled_va, components, mean)

    params = booster_params(cfg, seed)
    dtrain = xgboost.DMatrix(p_tr, label=y_tr, weight=sample_weights(y_tr, cfg.fearful_boost), missing=np.nan)
    dval = xgboost.DMatrix(p_va, label=y_va, missing=np.nan)
    history: dict[str, Any] = {}
    booster = xgboost.train(
        params,
        dtrain,
        num_boost_round=cfg.n_estimators,
        evals=[(dval, "val")],
        early_stopping_rounds=cfg.early_stopping_rounds if len(y_va) else None,
        evals_result=history,
        verbose_eval=False,
    )
    rounds = int(booster.num_boosted_rounds())
    best_iteration = int(getattr(booster, "best_iteration", rounds - 1))
    model = TabularModel(
        col_medians=medians,
        pca_components=components,
        pca_mean=mean,
        booster=booster,
        n_iterations=best_iteration + 1,
    )
    val_pred = model.predict_proba(x_va).argmax(axis=1) if len(y_va) else np.zeros(0, np.int64)
    losses = history.get("val", {}).get("mlogloss", [])
    metrics: dict[str, Any] = {
        "pca_components": k,
        "pca_explained_variance": float(np.sum(pca.explained_variance_ratio_)),
        "rounds": rounds,
        "best_iteration": best_iteration,
        "val_mlogloss": float(losses[best_iteration]) if losses else None,
        "val_accuracy": accuracy(y_va, val_pred),
        "val_balanced_accuracy": balanced_accuracy(y_va, val_pred),
        "train_rows": len(y_tr),
        "seconds": round(time.monotonic() - started, 3),
    }
    mlog.write("xgb_done", **metrics)
    return model, metrics
