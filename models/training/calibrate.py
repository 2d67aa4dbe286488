"""Ensemble calibration on val (docs/training.md, "Calibration"): the transformer's temperature and the fusion weight.

**Temperature by NLL.** The original searched T on a grid by *balanced accuracy* of
``argmax(softmax(logits / T))``. The argmax does not depend on T > 0, so every grid point scored the
same and the first one (0.3) was kept: its T = 0.3 is an artefact, not a fit. We minimise the
negative log-likelihood of the val labels over T (bounded, on log T), the standard temperature
scaling objective, which does move T and makes ``p_modal`` calibrated before it is blended.

**Weight by balanced accuracy**, over a grid of ``w_modal`` in [0, 1] (``w_xgb = 1 − w_modal``), of
the very blend serving computes. The weights only apply when both modalities are present (serving
collapses to one model otherwise, :func:`models.ensemble.ensemble_weights`), so by default they are
fitted on the val rows with both modalities. Balanced accuracy has plateaus; among tied weights the
one with the lowest blend NLL wins (the original kept the first, i.e. the smallest w). With
``optuna_trials > 0`` a TPE search over w replaces the grid (Optuna is an optional dependency).

Inputs come from :class:`models.predictor.Predictor` run on val with a provisional bundle, so the
logits and XGB probabilities are exactly the serving ones.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from models.bundle import EnsembleParams
from models.ensemble import softmax_with_temperature
from models.training.config import CalibrateConfig
from models.training.metrics import balanced_accuracy, nll

log = logging.getLogger(__name__)


def fit_temperature(logits: np.ndarray, y: np.ndarray, bounds: tuple[float, float]) -> float:
    """argmin over T in ``bounds`` of the NLL of softmax(logits / T), searched on log T."""
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    if len(y) == 0:
        return 1.0

    def objective(log_t: float) -> float:
        return nll(softmax_with_temperature(logits, math.exp(log_t)), y)

    res = minimize_scalar(objective, bounds=(lo, hi), method="bounded", options={"xatol": 1e-5})
    return float(math.exp(float(res.x)))


def blend(p_modal: np.ndarray, p_tab: np.ndarray, w_modal: float) -> np.ndarray:
    """``w·p_modal + (1 − w)·p_xgb`` with Python-float weights on float32 arrays, as serving blends."""
    out: np.ndarray = float(w_modal) * p_modal + float(1.0 - w_modal) * p_tab
    return out


def _score(p_modal: np.ndarray, p_tab: np.ndarray, y: np.ndarray, w: float) -> tuple[float, float]:
    probs = blend(p_modal, p_tab, w)
    return balanced_accuracy(y, probs.argmax(axis=1)), nll(probs, y)


def fit_weight_grid(p_modal: np.ndarray, p_tab: np.ndarray, y: np.ndarray, points: int) -> tuple[float, dict[str, Any]]:
    """Best balanced accuracy on an even grid; ties broken by the lowest blend NLL."""
    best_w, best = 0.5, (-math.inf, math.inf)
    for w in np.linspace(0.0, 1.0, max(2, points)):
        bal, loss = _score(p_modal, p_tab, y, float(w))
        if bal > best[0] + 1e-12 or (abs(bal - best[0]) <= 1e-12 and loss < best[1]):
            best_w, best = float(w), (bal, loss)
    return best_w, {"method": "grid", "points": points, "balanced_accuracy": best[0], "nll": best[1]}


def fit_weight_optuna(
    p_modal: np.ndarray, p_tab: np.ndarray, y: np.ndarray, trials: int, seed: int
) -> tuple[float, dict[str, Any]]:
    """TPE search of w (maximise balanced accuracy, then minimise NLL as a tiny tie-breaker)."""
    try:
        import optuna
    except ImportError as exc:
        raise RuntimeError(
            "calibrate.optuna_trials > 0 needs Optuna (pip install optuna); set it to 0 to use the grid search"
        ) from exc
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: Any) -> float:
        bal, loss = _score(p_modal, p_tab, y, trial.suggest_float("w_modal", 0.0, 1.0))
        return bal - 1e-6 * loss

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    w = float(study.best_params["w_modal"])
    bal, loss = _score(p_modal, p_tab, y, w)
    return w, {"method": "optuna", "trials": trials, "balanced_accuracy": bal, "nll": loss}


def calibrate(
    fusion_logits: np.ndarray,
    p_tabular: np.ndarray,
    profiles: np.ndarray,
    y: np.ndarray,
    cfg: CalibrateConfig,
    seed: int,
) -> tuple[EnsembleParams, dict[str, Any]]:
    """Fit T on every val row's fusion logits, then w on the (both-modality) val rows."""
    logits = np.asarray(fusion_logits, np.float32)
    p_tab = np.asarray(p_tabular, np.float32)
    y = np.asarray(y, np.int64)
    if cfg.temperature == "nll":
        temperature = fit_temperature(logits, y, cfg.temperature_bounds)
    elif cfg.temperature == "fixed":
        temperature = float(cfg.fixed_temperature)
    else:
        raise ValueError(f"calibrate.temperature must be 'nll' or 'fixed', got {cfg.temperature!r}")
    nll_t1 = nll(softmax_with_temperature(logits, 1.0), y)
    nll_fit = nll(softmax_with_temperature(logits, temperature), y)

    rows = np.asarray(profiles) == "both" if cfg.weight_rows == "both" else np.ones(len(y), bool)
    if cfg.weight_rows not in ("both", "all"):
        raise ValueError(f"calibrate.weight_rows must be 'both' or 'all', got {cfg.weight_rows!r}")
    p_modal = softmax_with_temperature(logits, temperature)
    if rows.any():
        if cfg.optuna_trials > 0:
            w, info = fit_weight_optuna(p_modal[rows], p_tab[rows], y[rows], cfg.optuna_trials, seed)
        else:
            w, info = fit_weight_grid(p_modal[rows], p_tab[rows], y[rows], cfg.weight_grid)
    else:
        w = EnsembleParams().w_modal
        info = {"method": "default", "note": "no val rows to fit the weight on; kept the reference 0.455"}
    params = EnsembleParams(temperature=temperature, w_modal=w, w_xgb=1.0 - w)
    metrics = {
        "temperature": temperature,
        "val_nll_t1": nll_t1,
        "val_nll_fitted": nll_fit,
        "w_modal": params.w_modal,
        "w_xgb": params.w_xgb,
        "weight_rows": int(rows.sum()),
        "weight_fit": info,
        "val_balanced_accuracy_transformer": balanced_accuracy(y[rows], p_modal[rows].argmax(axis=1)),
        "val_balanced_accuracy_xgb": balanced_accuracy(y[rows], p_tab[rows].argmax(axis=1)),
    }
    return params, metrics
