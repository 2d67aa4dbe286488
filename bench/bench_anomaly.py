"""Anomaly scoring cost per call: scikit-learn vs the vectorised IsolationForestArrays.

For each golden detector (``reference/golden/artifacts/models/anomaly/iso_*.joblib``) this times, for
1 and 10 rows per call:

* forest only: ``IsolationForest.decision_function`` vs ``IsolationForestArrays.decision_function``
  on rows of the forest's input width (the detector's PCA output);
* full detector: scikit-learn ``scaler.transform`` → ``pca.transform`` → ``decision_function`` vs
  ``AnomalyDetector.score`` on 9,452-d anomaly feature rows.

It prints median milliseconds per call and the speed-up ratio, and checks the two agree on the rows
it timed. Run: ``python -m bench.bench_anomaly`` (or ``python bench/bench_anomaly.py``) from the repo.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from models.anomaly import AnomalyDetector  # noqa: E402
from models.constants import ANOMALY_DIM  # noqa: E402
from models.hoovik_pickles import load_anomaly, load_restricted  # noqa: E402

DETECTORS = ("both", "audio_only", "video_only", "global_fallback")


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


def bench_detector(original: Any, ours: AnomalyDetector, rows: int, repeats: int, seed: int = 0) -> list:
    """``[(what, sklearn_ms, ours_ms), ...]`` for the forest alone and the full detector, B=rows."""
    iso, scaler, pca = original.iso, original.scaler, original.pca
    feats = np.random.default_rng(seed).normal(size=(rows, ANOMALY_DIM)).astype(np.float32)
    transformed = ours.transform(feats)

    def sk_full() -> np.ndarray:
        x = scaler.transform(feats)
        if pca is not None:
            x = pca.transform(x)
        return iso.decision_function(x)

    # The timed paths must agree, or the comparison means nothing.
    assert np.allclose(ours.score(feats)[0], sk_full(), rtol=0, atol=1e-6), ours.name
    assert np.allclose(ours.forest.decision_function(transformed), iso.decision_function(transformed))
    return [
        (
            "forest",
            median_ms(lambda: iso.decision_function(transformed), repeats),
            median_ms(lambda: ours.forest.decision_function(transformed), repeats),
        ),
        ("full", median_ms(sk_full, repeats), median_ms(lambda: ours.score(feats), repeats)),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--golden-dir", type=Path, default=_default_golden())
    parser.add_argument("--repeats", type=int, default=200, help="timed calls per measurement")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 10])
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

    anomaly_dir = args.golden_dir / "artifacts" / "models" / "anomaly"
    if not anomaly_dir.is_dir():
        parser.error(f"golden anomaly detectors not found under {anomaly_dir}")
    print(f"numpy {np.__version__}; repeats={args.repeats}; median ms per call; {_blas_threads()}")
    header = f"{'detector':<16} {'what':<8} {'rows':>4} {'sklearn':>9} {'ours':>9} {'speed-up':>9}"
    print(header)
    print("-" * len(header))
    ratios: dict[tuple[str, int], list[float]] = {}
    for name in DETECTORS:
        original = load_restricted(anomaly_dir / f"iso_{name}.joblib")
        ours = load_anomaly(anomaly_dir / f"iso_{name}.joblib")
        for rows in args.rows:
            for what, sk, mine in bench_detector(original, ours, rows, args.repeats):
                ratios.setdefault((what, rows), []).append(sk / mine)
                print(f"{name:<16} {what:<8} {rows:>4} {sk:>9.3f} {mine:>9.3f} {sk / mine:>8.1f}x")
    print()
    for (what, rows), values in sorted(ratios.items()):
        print(f"median speed-up over detectors: {what:<6} rows={rows:<3} {statistics.median(values):.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
