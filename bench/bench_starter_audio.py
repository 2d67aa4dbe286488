"""Starter audio branch cost: the log-mel statistics extractor per window, and the head per batch.

Times (medians of ``--repeats`` calls, interleaved round-robin so background load hits every
measurement alike):

* ``LogMelStatsExtractor.embed`` on one window and on a batch of 8 (ms per window), on RAVDESS
  speech windows from the shared training folder (seeded noise when it is absent);
* the speaker normaliser (``normalise`` of a (10, D) sequence + one ``update``);
* ``pool_sequence`` + ``AudioHead.logits`` for 1 and 10 participants, with a head of the real
  shape (random weights: the cost depends on shapes only).

Run: ``python -m bench.bench_starter_audio`` (or ``python bench/bench_starter_audio.py``) from the
repo root. ``--blas-threads 1`` limits BLAS like the bot's worker threads may.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from models.constants import NUM_CLASSES, SEQ_LEN  # noqa: E402
from models.starter import audio_features as af  # noqa: E402
from models.starter.audio_head import AudioHead, pool_sequence, pooled_dim  # noqa: E402
from models.starter.speaker_norm import SpeakerNormaliser  # noqa: E402


def _shared_dir() -> Path:
    env = os.environ.get("HOOVIK_SHARED")
    return Path(env) if env else REPO.parent / "shared"


def speech_windows(count: int, window_samples: int) -> tuple[list[np.ndarray], str]:
    from models.starter.ravdess import read_audio

    files = sorted((_shared_dir() / "training" / "ravdess-speech").glob("Actor_0[1-4]/*.flac"))
    windows: list[np.ndarray] = []
    for path in files[::7]:
        x = read_audio(path)
        windows.extend(x[s : s + window_samples] for s in range(8000, len(x) - window_samples, 8000))
        if len(windows) >= count:
            return windows[:count], f"RAVDESS speech ({len(files)} files found)"
    rng = np.random.default_rng(0)
    while len(windows) < count:
        windows.append((rng.standard_normal(window_samples) * 0.1).astype(np.float32))
    return windows, "seeded Gaussian noise (shared RAVDESS folder not found)"


def interleaved(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    for fn in calls.values():
        fn()
    samples: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(repeats):
        for key, fn in calls.items():
            t = time.perf_counter()
            fn()
            samples[key].append((time.perf_counter() - t) * 1e3)
    return samples


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=200, help="timed calls per measurement")
    parser.add_argument("--blas-threads", type=int, default=None, help="limit BLAS threads (threadpoolctl)")
    args = parser.parse_args(argv)
    with threadpool_limits(args.blas_threads, user_api="blas"):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    extractor = af.LogMelStatsExtractor()
    build_ms = (time.perf_counter() - t0) * 1e3
    windows, source = speech_windows(64, extractor.window_samples)
    rng = np.random.default_rng(0)
    dim, p = extractor.dim, pooled_dim(extractor.dim)
    head = AudioHead(
        rng.normal(size=p), rng.uniform(0.5, 2.0, size=p), rng.normal(size=(p, NUM_CLASSES)), rng.normal(size=6)
    )
    norm = SpeakerNormaliser(np.zeros(dim), np.ones(dim), 10.0)
    feats = extractor.embed(windows)
    seq = feats[:SEQ_LEN]
    xa1 = rng.normal(size=(1, SEQ_LEN, dim)).astype(np.float32)
    xa10 = rng.normal(size=(10, SEQ_LEN, dim)).astype(np.float32)
    am = np.ones((10, SEQ_LEN), np.float32)
    it = iter(range(10**9))

    def one_window() -> object:
        return extractor.embed([windows[next(it) % len(windows)]])

    def update_normalise() -> object:
        norm.update(feats[next(it) % len(feats)])
        return norm.normalise(seq)

    calls: dict[str, Callable[[], object]] = {
        "extractor, 1 window": one_window,
        "extractor, 8 windows": lambda: extractor.embed(windows[:8]),
        "speaker norm update + normalise (10, D)": update_normalise,
        "pool + head logits, 1 participant": lambda: head.logits(pool_sequence(xa1, am[:1])),
        "pool + head logits, 10 participants": lambda: head.logits(pool_sequence(xa10, am)),
    }
    samples = interleaved(calls, args.repeats)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} CPUs, load {load}; extractor {af.FEATURE_VERSION}, D={dim}, window {af.WINDOW_S} s")
    print(f"input: {source}; extractor construction {build_ms:.0f} ms; median of {args.repeats} calls\n")
    print(f"{'measurement':<42} {'ms/call':>9} {'ms/item':>9} {'min ms':>8}")
    per = {"extractor, 8 windows": 8, "pool + head logits, 10 participants": 10}
    for key, values in samples.items():
        med = statistics.median(values)
        n = per.get(key, 1)
        print(f"{key:<42} {med:>9.3f} {med / n:>9.3f} {min(values):>8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
