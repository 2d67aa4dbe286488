"""Latency of the EmotionTransformer serving call (``TransformerRunner.predict_logits``) on CPU.

Measures the median wall time per call at batch 1 (one participant) and batch 10 (ten participants
batched into one call), fp32, with the production config and seeded random weights (the weights do
not change the cost). The per-participant ratio (batch-10 time / 10 over batch-1 time) says how much
batching participants into one inference call saves.

    python bench/bench_transformer.py [--threads 2] [--iters 200] [--batches 1 10]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import numpy as np
import torch

from models.constants import AUDIO_DIM, FACE_DIM, SEQ_LEN
from models.transformer import TransformerRunner, build_seeded_model


def _inputs(batch: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xf = rng.standard_normal((batch, SEQ_LEN, FACE_DIM)).astype(np.float32)
    xa = rng.standard_normal((batch, SEQ_LEN, AUDIO_DIM)).astype(np.float32)
    fm = np.ones((batch, SEQ_LEN), np.float32)
    am = np.ones((batch, SEQ_LEN), np.float32)
    fm[:, :3] = 0.0  # a few padded frames, as in live use
    return xf, xa, fm, am


def measure(runner: TransformerRunner, batch: int, iters: int, warmup: int) -> float:
    """Median milliseconds per ``predict_logits`` call at this batch size."""
    args = _inputs(batch, seed=batch)
    for _ in range(warmup):
        runner.predict_logits(*args)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        runner.predict_logits(*args)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def main(argv: Sequence[str] | None = None) -> dict[int, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (golden: 2)")
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 10])
    args = parser.parse_args(argv)

    runner = TransformerRunner(build_seeded_model(0), num_threads=args.threads)
    setup = f"{args.threads} thread(s), fp32, {args.iters} iters ({args.warmup} warm-up)"
    print(f"torch {torch.__version__}, {setup}")
    medians: dict[int, float] = {}
    for batch in args.batches:
        medians[batch] = measure(runner, batch, args.iters, args.warmup)
        ms = medians[batch]
        print(f"batch {batch:3d}: median {ms:8.3f} ms/call, {ms / batch:8.3f} ms/participant")
    if 1 in medians:
        for batch, ms in medians.items():
            if batch != 1:
                ratio = (ms / batch) / medians[1]
                print(f"per-participant cost at batch {batch} vs batch 1: {ratio:.3f}x")
    return medians


if __name__ == "__main__":
    main()
