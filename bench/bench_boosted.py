"""XGBoost ``inplace_predict`` vs the booster as numpy arrays (``models.boosted``), batch 1/2/4/10.

Usage: .venv/bin/python bench/bench_boosted.py [--bundle DIR] [--repeats N]

Without --bundle it uses the production-size untrained reference bundle (3,150 rounds × 6 classes
of depth-5 trees = 18,900 trees; built once into the cache). One thread, as in the bot's inference
pool. Times ``TabularModel.predict_proba`` with ``fast_trees=False`` (XGBoost) and ``True`` (arrays)
on the same random feature rows (a third of them with NaN blocks, as for audio-only rows), plus the
booster step alone on the PCA rows, and prints medians (ms per call) and the max |Δp|.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from _timing import median_ms  # bench/ is on sys.path when a bench script runs
from threadpoolctl import threadpool_limits

from models.assets import cache_dir
from models.bundle import load_bundle
from models.constants import TABULAR_DIM
from models.untrained import ensure_production_bundle


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", help="reference bundle directory (default: the production-size untrained one)")
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args(argv)
    threadpool_limits(1)
    bundle_dir = Path(args.bundle) if args.bundle else ensure_production_bundle(cache_dir() / "bundles")
    t0 = time.perf_counter()
    fast = load_bundle(bundle_dir).tabular
    load_s = time.perf_counter() - t0
    slow = replace(fast, fast_trees=False)
    t0 = time.perf_counter()
    trees = fast.prepare()
    build_s = time.perf_counter() - t0
    assert trees is not None and slow.prepare() is None, "the arrays were not built for this booster"
    print(f"bundle {bundle_dir}: {trees.n_trees} trees, {len(trees.feature)} levels, {trees.n_features} inputs")
    print(f"load_bundle {load_s:.2f} s, then building + checking the arrays {build_s:.2f} s")
    print(f"1 thread, medians of {args.repeats} (ms per call)")
    head = ("batch", "xgboost", "arrays", "speed-up", "booster only: xgb", "arrays", "max |dp|")
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, (6, 9, 9, 9, 18, 8, 10), strict=True)))
    rng = np.random.default_rng(0)
    worst = 0.0
    for batch in (1, 2, 4, 10):
        feats = rng.standard_normal((batch, TABULAR_DIM)).astype(np.float32)
        feats[1::3, : TABULAR_DIM // 2] = np.nan  # absent blocks, filled with the medians
        _, pca = fast.transform(feats)
        n = fast.n_iterations
        t_slow = median_ms(lambda: slow.predict_proba(feats), args.repeats)  # noqa: B023
        t_fast = median_ms(lambda: fast.predict_proba(feats), args.repeats)  # noqa: B023
        b_slow = median_ms(
            lambda: fast.booster.inplace_predict(pca, iteration_range=(0, n), missing=np.nan),  # noqa: B023
            args.repeats,
        )
        b_fast = median_ms(lambda: trees.predict_proba(pca), args.repeats)  # noqa: B023
        diff = float(np.max(np.abs(fast.predict_proba(feats) - slow.predict_proba(feats))))
        worst = max(worst, diff)
        speed = f"{t_slow / t_fast:.1f}x"
        print(f"{batch:>6} {t_slow:>9.2f} {t_fast:>9.2f} {speed:>9} {b_slow:>18.2f} {b_fast:>8.2f} {diff:>10.2g}")
    print(f"max |dp| over all batches: {worst:.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
