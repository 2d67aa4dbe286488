"""Wav2Vec2-large on one 0.6 s window: precision × torch intra-op threads (the engine's boost).

Usage: .venv/bin/python bench/bench_audio_threads.py [--repeats N] [--batch 1,2]

Builds the production architecture (12 layers, hidden 1024; seeded, untrained: the cost does not
depend on the weights) and times ``AudioEmbedder.embed`` for fp32, bf16 and int8 with 1 thread and
with every core (what ``bot/pipeline/intraop.py`` allows while the bot is light). Prints medians
in ms and the speed-up of every core over one thread; run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np
import torch
from _timing import median_ms  # bench/ is on sys.path when a bench script runs

from bot.pipeline.intraop import available_cores
from models.audio import AudioEmbedder
from models.untrained import untrained_wav2vec2

WINDOW = 9600  # 0.6 s at 16 kHz: the reference window


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", default="1,2", help="comma-separated batch sizes")
    args = p.parse_args(argv)
    batches = [int(b) for b in args.batch.split(",")]
    cores = available_cores()
    extractor, model = untrained_wav2vec2("production")
    rng = np.random.default_rng(0)
    print(f"Wav2Vec2-large, 0.6 s windows, medians of {args.repeats} (ms); every core = {cores}")
    print(f"{'precision':<10}{'batch':>6}{'1 thread':>11}{f'{cores} threads':>12}{'speed-up':>10}")
    for precision in ("fp32", "bf16", "int8"):
        embedder = AudioEmbedder.from_model(extractor, model, precision=precision)  # type: ignore[arg-type]
        for batch in batches:
            windows = [rng.standard_normal(WINDOW).astype(np.float32) * 0.1 for _ in range(batch)]
            times = []
            for threads in (1, cores):
                torch.set_num_threads(threads)
                times.append(median_ms(lambda e=embedder, w=windows: e.embed(w), args.repeats))
            print(f"{precision:<10}{batch:>6}{times[0]:>11.1f}{times[1]:>12.1f}{times[0] / times[1]:>9.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
