"""Whole predictor call (transformer + tabular + anomaly + fusion) for 1 and 10 participants.

Usage: .venv/bin/python bench/bench_predictor.py [--bundle DIR] [--repeats N]
Without --bundle it imports the golden artefact directory from ../shared (XGBoost 50 rounds,
forests of 50 trees); pass a production-size bundle to time production sizes.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from models.bundle import load_bundle
from models.hoovik_import import import_hoovik
from models.predictor import Predictor

SHARED = Path(__file__).resolve().parents[2] / "shared"


def _inputs(batch: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    xf = rng.standard_normal((batch, 10, 326)).astype(np.float32)
    xa = rng.standard_normal((batch, 10, 1024)).astype(np.float32)
    fm = np.ones((batch, 10), np.float32)
    am = np.ones((batch, 10), np.float32)
    am[1::3] = 0  # a mix of profiles, as in a real meeting
    fm[2::3] = 0
    return xf, xa, fm, am


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", help="bundle directory (default: import the golden artefacts)")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--threads", type=int, default=1, help="torch/BLAS threads (the bot uses 1)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    if args.bundle:
        bundle_dir = Path(args.bundle)
    else:
        bundle_dir = import_hoovik(SHARED / "reference" / "golden" / "artifacts", Path(tempfile.mkdtemp()) / "b")
    predictor = Predictor(load_bundle(bundle_dir), torch_threads=args.threads)
    rng = np.random.default_rng(0)
    print(f"bundle {bundle_dir}  threads={args.threads}  repeats={args.repeats}")
    print(f"{'participants':>12} {'median ms/call':>15} {'ms/participant':>15} {'vs batch 1':>11}")
    base = None
    for batch in (1, 10):
        arrays = _inputs(batch, rng)
        predictor.predict_batch(*arrays)  # warm-up
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            predictor.predict_batch(*arrays)
            times.append((time.perf_counter() - t0) * 1000)
        med = statistics.median(times)
        base = base or med
        print(f"{batch:>12} {med:>15.2f} {med / batch:>15.2f} {med / base:>10.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
