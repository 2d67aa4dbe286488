"""Tabular branch cost per call: feature building and ``predict_proba`` for 1 and 10 rows.

Times, with the golden artefacts (``reference/golden``):

* ``build_tabular_features`` on a batch of B rows vs B single-sample calls (what a per-participant
  loop would cost);
* ``TabularModel.transform`` (median fill + PCA) and ``predict_proba`` with the golden booster
  (50 rounds × 6 classes);
* the same ``predict_proba`` with a production-size booster: 3,150 rounds × 6 classes, max_depth 5,
  on 512 inputs. Training that many rounds takes minutes on a small machine, so by default
  ``--train-rounds`` (50) rounds are really trained on random data and their trees are tiled up to
  ``--rounds`` (3150) in the model JSON: the prediction cost (trees × depth) is the production one,
  the probabilities are meaningless. ``--train-rounds 3150`` trains them all instead.

Also reports ``Booster.inplace_predict`` (what ``XGBClassifier.predict_proba`` uses) next to the
``DMatrix`` path ``TabularModel`` uses, for information.

Run: ``python -m bench.bench_tabular`` (or ``python bench/bench_tabular.py``) from the repo root.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import xgboost
from threadpoolctl import threadpool_info, threadpool_limits

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from models.constants import NUM_CLASSES  # noqa: E402
from models.hoovik_pickles import load_tabular  # noqa: E402
from models.tabular import TabularModel, build_tabular_features  # noqa: E402


def _default_golden() -> Path:
    shared = os.environ.get("HOOVIK_SHARED")
    return (Path(shared) if shared else REPO.parent / "shared") / "reference" / "golden"


def _blas_threads() -> str:
    pools = [f"{p['internal_api']}={p['num_threads']}" for p in threadpool_info() if p["user_api"] == "blas"]
    return "BLAS threads: " + (", ".join(pools) or "none")


def median_ms(fn: Callable[[], Any], repeats: int, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``repeats`` calls (after a short warm-up)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def production_size_booster(
    rounds: int, train_rounds: int, n_features: int, seed: int = 0
) -> tuple[xgboost.Booster, float]:
    """``(booster, mean nodes per tree)``: ``rounds`` × 6 trees of max_depth 5 on ``n_features`` inputs (random data).

    ``train_rounds`` rounds are trained for real (production-like hyper-parameters, but no pruning
    so trees grow to depth 5); when fewer than ``rounds``, their trees are repeated in the model JSON
    until the booster has ``rounds`` rounds.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((512, n_features)).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, size=len(x))
    params = {
        "objective": "multi:softprob",
        "num_class": NUM_CLASSES,
        "max_depth": 5,
        "eta": 0.030834,
        "subsample": 0.759195,
        "colsample_bytree": 0.409213,
        "colsample_bylevel": 0.577997,
        "tree_method": "hist",
        "max_bin": 32,
        "seed": seed,
    }
    booster = xgboost.train(params, xgboost.DMatrix(x, label=y, missing=np.nan), num_boost_round=train_rounds)
    model = json.loads(bytes(booster.save_raw("json")))
    gb = model["learner"]["gradient_booster"]["model"]
    trained = gb["trees"]
    mean_nodes = float(np.mean([int(t["tree_param"]["num_nodes"]) for t in trained]))
    if train_rounds >= rounds:
        return booster, mean_nodes
    trees = []
    for i in range(rounds * NUM_CLASSES):
        tree = dict(trained[i % len(trained)])
        tree["id"] = i
        trees.append(tree)
    gb["trees"] = trees
    gb["tree_info"] = [i % NUM_CLASSES for i in range(len(trees))]
    gb["iteration_indptr"] = [r * NUM_CLASSES for r in range(rounds + 1)]
    gb["gbtree_model_param"]["num_trees"] = str(len(trees))
    return xgboost.Booster(model_file=bytearray(json.dumps(model).encode())), mean_nodes


def _golden_inputs(golden_dir: Path, rows: int) -> tuple[np.ndarray, ...]:
    cases = sorted(p for p in (golden_dir / "cases").iterdir() if (p / "xgb_features.npy").is_file())
    picked = [cases[i % len(cases)] for i in range(rows)]
    return tuple(np.stack([np.load(c / f"input_{k}.npy") for c in picked]) for k in ("xf", "xa", "fm", "am"))


def _predict_dmatrix(booster: xgboost.Booster, x: np.ndarray, n: int) -> np.ndarray:
    return booster.predict(xgboost.DMatrix(x, missing=np.nan), iteration_range=(0, n))


def _report(step: str, rows: int, ms: float) -> None:
    print(f"{step:<44} {rows:>4} {ms:>9.3f} {ms / rows:>8.3f}")


def bench_rows(golden_dir: Path, golden: TabularModel, big: TabularModel, rows: int, repeats: int) -> None:
    """Time every tabular step for one batch size and print a row per step."""
    xf, xa, fm, am = _golden_inputs(golden_dir, rows)
    feats = build_tabular_features(xf, xa, fm, am)

    def per_row() -> None:
        for i in range(len(fm)):
            build_tabular_features(xf[i], xa[i], fm[i], am[i])

    batched = median_ms(lambda: build_tabular_features(xf, xa, fm, am), repeats)
    looped = median_ms(per_row, repeats)
    _report("features: one batched call", rows, batched)
    _report(f"features: {rows} single calls (batching {looped / batched:.1f}x)", rows, looped)
    _report("median fill + PCA (transform)", rows, median_ms(lambda: golden.transform(feats), repeats))
    _, pca = golden.transform(feats)
    for label, model in (("golden 50x6", golden), (f"prod {big.n_iterations}x6", big)):
        booster, n = model.booster, model.n_iterations
        _report(f"predict_proba [{label}]", rows, median_ms(partial(model.predict_proba, feats), repeats))
        dmatrix_ms = median_ms(partial(_predict_dmatrix, booster, pca, n), repeats)
        _report(f"  booster.predict(DMatrix) only [{label}]", rows, dmatrix_ms)
        inplace_ms = median_ms(partial(booster.inplace_predict, pca, iteration_range=(0, n)), repeats)
        _report(f"  booster.inplace_predict only [{label}]", rows, inplace_ms)
    end_to_end = median_ms(lambda: big.predict_proba(build_tabular_features(xf, xa, fm, am)), repeats)
    _report(f"features + predict_proba [prod {big.n_iterations}x6]", rows, end_to_end)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--golden-dir", type=Path, default=_default_golden())
    parser.add_argument("--repeats", type=int, default=100, help="timed calls per measurement")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--rounds", type=int, default=3150, help="rounds of the production-size booster")
    parser.add_argument("--train-rounds", type=int, default=50, help="rounds really trained (rest tiled)")
    parser.add_argument(
        "--blas-threads",
        type=int,
        default=None,
        help="limit BLAS (OpenBLAS) threads via threadpoolctl; default: library default",
    )
    args = parser.parse_args(argv)
    with threadpool_limits(args.blas_threads, user_api="blas"):
        return _run(parser, args)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:

    xgb_dir = args.golden_dir / "artifacts" / "models" / "xgb"
    if not xgb_dir.is_dir():
        parser.error(f"golden XGB artefacts not found under {xgb_dir}")
    golden = load_tabular(xgb_dir)
    t0 = time.perf_counter()
    big_booster, mean_nodes = production_size_booster(
        args.rounds, min(args.train_rounds, args.rounds), golden.n_components
    )
    build_s = time.perf_counter() - t0
    big = TabularModel(golden.col_medians, golden.pca_components, golden.pca_mean, big_booster, args.rounds)
    print(
        f"xgboost {xgboost.__version__} (booster nthread {golden.nthread}); repeats={args.repeats}; "
        f"median ms per call; {_blas_threads()}\n"
        f"production-size booster: {big_booster.num_boosted_rounds()} rounds x {NUM_CLASSES} classes, "
        f"max_depth 5, {golden.n_components} inputs ({min(args.train_rounds, args.rounds)} rounds trained"
        f"{', rest tiled' if args.train_rounds < args.rounds else ''}; {mean_nodes:.1f} nodes/tree of max 63; "
        f"built in {build_s:.1f} s)"
    )
    header = f"{'step':<44} {'rows':>4} {'ms':>9} {'ms/row':>8}"
    print(header)
    print("-" * len(header))

    for rows in args.rows:
        bench_rows(args.golden_dir, golden, big, rows, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
