"""``hoovik-bot replay``: run recordings through the live pipeline and write a timeline and a report.

Exit status: 0 when every input replayed completely, 1 when any input had a problem (its error is
printed and recorded in summary.json; every other file's results are still written), 2 when no
input could be replayed at all.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bot.pipeline.results import EmotionResult


def add_parser(subparsers: Any) -> None:
    from bot.config import add_model_flags

    p = subparsers.add_parser(
        "replay",
        help="replay recordings through the pipeline (faster than real time) and write a report",
        description=(
            "Replay media files (one participant each), folders of them, or a JSON/CSV manifest through the "
            "same features, profiles, smoothing and anomaly logic as the live bot, on the media clock. "
            "Writes timeline.jsonl, timeline.csv, summary.json and report.html into --out."
        ),
    )
    p.add_argument("inputs", nargs="+", help="media files, folders, or manifest files (.json/.csv)")
    p.add_argument("-o", "--out", default="replay-out", help="output folder (default: replay-out)")
    p.add_argument("--realtime", action="store_true", help="pace results to the media clock, printing each one")
    p.add_argument("--quiet", action="store_true", help="no progress bar or live output")
    p.add_argument("--jobs", type=int, default=2, help="files replayed at the same time (default 2)")
    p.add_argument(
        "--fps", type=float, help="video sampling ceiling (engine.target_fps, default 5; at most one frame per step)"
    )
    p.add_argument(
        "--allow-untrained", action="store_true", help="fall back to an untrained Wav2Vec2 when the model is missing"
    )
    add_model_flags(p)
    p.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> int:
    from bot.config import config_from_args
    from bot.replay.inputs import resolve_inputs
    from bot.replay.records import ReplayModels
    from bot.replay.run import replay
    from bot.runtime import build_runtime

    cfg = config_from_args(args)
    if args.fps is not None:
        if args.fps <= 0:
            raise ValueError("--fps must be positive")
        cfg.engine.target_fps = args.fps
        cfg.engine.min_fps = min(cfg.engine.min_fps, args.fps)
    inputs, input_errors = resolve_inputs(args.inputs)
    for err in input_errors:
        print(f"hoovik-bot replay: error: {err.message}", file=sys.stderr)
    if not inputs:
        print("hoovik-bot replay: nothing to replay", file=sys.stderr)
        return 2
    runtime = build_runtime(cfg, allow_untrained_audio=args.allow_untrained, inference_process=False)
    models = ReplayModels.from_runtime(runtime)
    run = replay(
        inputs,
        cfg.engine,
        models,
        out_dir=Path(args.out),
        input_errors=input_errors,
        jobs=args.jobs,
        realtime=args.realtime,
        progress=not (args.quiet or args.realtime),
        on_result=_print_result if args.realtime and not args.quiet else None,
    )
    for p in run.participants:
        if p.error is not None:
            print(f"hoovik-bot replay: error: {p.error}", file=sys.stderr)
    if not args.quiet:
        ok = sum(1 for p in run.participants if p.status == "ok")
        print(
            f"replayed {ok}/{len(run.participants) + len(input_errors)} file(s) cleanly: {run.media_s:.1f} s of media "
            f"in {run.wall_s:.1f} s ({run.speed:.1f}x real time), {run.results} results -> {args.out}/",
            flush=True,
        )
        if not models.bundle.trained:
            print("note: untrained models (trained=false): results exercise the pipeline but are not emotions")
    if not any(p.results for p in run.participants) and all(p.error for p in run.participants):
        return 2
    return 1 if run.errors else 0


def _print_result(result: EmotionResult) -> None:
    t = (result.ts_ms or 0) / 1000.0
    flag = " ANOMALY" if result.anomaly else ""
    print(
        f"{t:9.2f}s {result.participant_id:<20} {result.emotion:<13} {result.confidence:.2f} {result.modality}{flag}",
        flush=True,
    )
