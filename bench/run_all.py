"""Run every component benchmark in turn (``make bench``); each prints medians and ratios.

The real-time and replay benchmarks start processes and run for minutes; they are separate
commands (see docs/engine.md and docs/replay.md).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUICK = (
    "bench_face",
    "bench_audio",
    "bench_transformer",
    "bench_tabular",
    "bench_anomaly",
    "bench_predictor",
    "bench_starter",
    "bench_starter_audio",
)
# Arguments per benchmark (the starter's reference comparison builds the production-size bundle,
# minutes on first use: run `bench/bench_starter.py` alone for it; `bench/bench_inference_profile.py`
# needs that bundle too).
ARGS: dict[str, list[str]] = {"bench_starter": ["--no-reference", "--cpu"]}


def main() -> int:
    sys.path.insert(0, str(HERE))
    for name in QUICK:
        print(f"\n=== {name} ===", flush=True)
        spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.main(ARGS.get(name, []))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
