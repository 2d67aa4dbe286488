"""Where the inference thread's time goes: each stage of one predictor call, at batch 1, 4 and 10.

Usage: .venv/bin/python bench/bench_inference_profile.py [--bundle DIR] [--repeats N]

Without --bundle it uses the production-size untrained reference bundle (18,900 XGBoost trees,
200-tree forests; built once into the cache), so the figures are what a production bundle costs.
One thread, as in the bot's inference pool. Rows are a meeting's mix: a third each of both,
audio_only and video_only. Stages, in the order ``Predictor.predict_batch`` runs them:

* validate       per-row input checks
* anomaly feat   the 9,452-d anomaly vectors
* anomaly score  scaler → PCA → IsolationForest, rows grouped by detector
* transformer    the EmotionTransformer forward (fp32)
* tabular feat   the 8,149-d tabular vectors (rows that need them)
* tabular PCA    median fill → PCA 512
* XGBoost        DMatrix + predict, or ``inplace_predict`` on the PCA array, or the booster's trees
                 as numpy arrays (``models/boosted.py``, what serving uses)
* fusion         temperature softmax + weighted blend

XGBoost's cost hardly depends on the number of rows (it walks 18,900 trees per call), so skipping
it for the face-only rows of a mixed batch saves little; the win is a batch whose rows are all
face-only (the engine groups silent participants together), where the call is skipped entirely.

Prints medians (ms per call) and each stage's share, then the whole call with and without
skipping the tabular branch for face-only rows (its fusion weight is 0 there).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import xgboost
from _timing import median_ms  # bench/ is on sys.path when a bench script runs
from threadpoolctl import threadpool_limits

from models.anomaly import build_anomaly_features
from models.assets import cache_dir
from models.bundle import load_bundle
from models.constants import NUM_CLASSES
from models.ensemble import fuse, validate_inputs
from models.predictor import Predictor, profile_of
from models.tabular import build_tabular_features
from models.untrained import ensure_production_bundle


def _rows(batch: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    xf = rng.standard_normal((batch, 10, 326)).astype(np.float32)
    xa = rng.standard_normal((batch, 10, 1024)).astype(np.float32)
    fm = np.ones((batch, 10), np.float32)
    am = np.ones((batch, 10), np.float32)
    am[2::3] = 0  # video only
    xa[2::3] = 0
    fm[1::3] = 0  # audio only
    xf[1::3] = 0
    return xf, xa, fm, am


def profile(predictor: Predictor, batch: int, repeats: int) -> dict[str, float]:
    xf, xa, fm, am = _rows(batch, np.random.default_rng(batch))
    face = fm.sum(axis=1) > 0
    audio = am.sum(axis=1) > 0
    profiles = [profile_of(bool(f), bool(a)) for f, a in zip(face, audio, strict=True)]
    tab = predictor.tabular
    out: dict[str, float] = {}
    out["validate"] = median_ms(lambda: [validate_inputs(xf[i], xa[i], fm[i], am[i]) for i in range(batch)], repeats)
    feats = build_anomaly_features(xf, xa, fm, am)
    out["anomaly feat"] = median_ms(lambda: build_anomaly_features(xf, xa, fm, am), repeats)
    out["anomaly score"] = median_ms(lambda: predictor.anomaly.score_batch(feats, profiles), repeats)
    out["transformer"] = median_ms(lambda: predictor.runner.predict_logits(xf, xa, fm, am), repeats)
    tf = build_tabular_features(xf, xa, fm, am)
    out["tabular feat"] = median_ms(lambda: build_tabular_features(xf, xa, fm, am), repeats)
    _, pca = tab.transform(tf)
    out["tabular PCA"] = median_ms(lambda: tab.transform(tf), repeats)

    def dmatrix() -> np.ndarray:
        dm = xgboost.DMatrix(pca, missing=np.nan, nthread=1)
        return np.asarray(tab.booster.predict(dm, iteration_range=(0, tab.n_iterations)))

    def inplace() -> np.ndarray:
        return np.asarray(tab.booster.inplace_predict(pca, iteration_range=(0, tab.n_iterations), missing=np.nan))

    out["XGBoost (DMatrix)"] = median_ms(dmatrix, repeats)
    out["XGBoost (inplace)"] = median_ms(inplace, repeats)
    trees = tab.prepare()
    if trees is not None:  # what serving uses (models/boosted.py)
        out["booster as arrays (live)"] = median_ms(lambda: trees.predict_proba(pca), repeats)
    logits = predictor.runner.predict_logits(xf, xa, fm, am)
    p_tab = np.full((batch, NUM_CLASSES), 1 / NUM_CLASSES, np.float32)
    e = predictor.ensemble
    out["fusion"] = median_ms(lambda: fuse(logits, p_tab, face, audio, e.temperature, e.w_modal, e.w_xgb), repeats)
    out["whole call"] = median_ms(lambda: Predictor.predict_batch(predictor, xf, xa, fm, am), repeats)
    skipping = Predictor(predictor.bundle, torch_threads=1, skip_unweighted=True)
    out["whole call, face-only rows skip XGBoost"] = median_ms(lambda: skipping.predict_batch(xf, xa, fm, am), repeats)
    # A group of silent participants (the engine groups them together): every row face-only.
    silent = (xf, np.zeros_like(xa), fm, np.zeros_like(am))
    silent[2][:] = 1.0
    out["all face-only: whole call"] = median_ms(lambda: Predictor.predict_batch(predictor, *silent), repeats)
    out["all face-only: skipping XGBoost"] = median_ms(lambda: skipping.predict_batch(*silent), repeats)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", help="reference bundle directory (default: the production-size untrained one)")
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    threadpool_limits(1)
    bundle_dir = Path(args.bundle) if args.bundle else ensure_production_bundle(cache_dir() / "bundles")
    predictor = Predictor(load_bundle(bundle_dir), torch_threads=1)
    print(f"bundle {bundle_dir}  (1 thread, medians of {args.repeats}; rows: 1/3 each profile)")
    table = {b: profile(predictor, b, args.repeats) for b in (1, 4, 10)}
    stages = list(table[1])
    print(f"{'stage':<42}" + "".join(f"{'batch ' + str(b):>16}" for b in table))
    for stage in stages:
        cells = []
        for b in table:
            ms = table[b][stage]
            share = 100 * ms / table[b]["whole call"]
            cells.append(f"{ms:>8.2f} ({share:>3.0f}%)")
        print(f"{stage:<42}" + "".join(f"{c:>16}" for c in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
