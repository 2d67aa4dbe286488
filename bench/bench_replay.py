"""Replay speed as a multiple of real time: one 640x480 clip, production-size models, 2 cores.

The clip is the RAVDESS video (a face and speech) re-encoded to 640x480 H.264 + AAC and played
``--loops`` times back to back. The audio model is the production Wav2Vec2 architecture
(``models.untrained.untrained_wav2vec2("production")``, 12 layers, seeded random weights: speed
depends on shapes only); the face model is the real MediaPipe asset from ``../shared/models``;
the bundle is the untrained demo bundle, which has every production shape; the VAD is Silero, on
as in the default config. Threads are set as ``bot.runtime.build_runtime`` sets them (torch and
BLAS single-threaded inside each pool thread).

What is timed is one file's replay end to end (decode, resample, sampling, face, audio, predictor,
smoothing, result building) on a replayer whose pools are already started, as in a run over many
files. Writing the output files is timed separately. Precisions are timed one run each per round,
in turn, so background load spreads evenly over them; the table shows medians.

Run:  .venv/bin/python bench/bench_replay.py [--repeats N] [--loops N] [--precisions fp32,bf16,int8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits

from bot.config import EngineConfig
from bot.pipeline.results import BundleInfo
from bot.replay.driver import Replayer
from bot.replay.inputs import ReplayInput
from bot.replay.outputs import write_outputs
from bot.replay.records import ParticipantReplay, ReplayModels
from bot.replay.synth import write_recording
from models.assets import locate_face_asset
from models.audio import AudioEmbedder
from models.face import FaceFeatureExtractor
from models.predictor import Predictor
from models.untrained import make_untrained_bundle, untrained_wav2vec2


def _shared_dir() -> Path:
    env = os.environ.get("HOOVIK_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3, help="timed replays per precision (median)")
    p.add_argument("--loops", type=int, default=3, help="times the 3.3 s clip is repeated in the test file")
    p.add_argument("--precisions", default="fp32,bf16,int8", help="comma-separated Wav2Vec2 precisions")
    p.add_argument("--threads", type=int, default=1, help="torch/BLAS threads per pool thread (runtime default 1)")
    return p.parse_args(argv)


async def _time_runs(
    replayers: dict[str, Replayer], inp: ReplayInput, repeats: int
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, ParticipantReplay]]:
    """Wall seconds and process CPU seconds (all threads) of each replay, per precision."""
    for r in replayers.values():  # warm-up: oneDNN primitives, MediaPipe graph, allocator growth
        await r.replay_one(inp)
    times: dict[str, list[float]] = {k: [] for k in replayers}
    cpu: dict[str, list[float]] = {k: [] for k in replayers}
    last: dict[str, ParticipantReplay] = {}
    for _ in range(repeats):
        for key, r in replayers.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            rec = await r.replay_one(inp)
            times[key].append(time.perf_counter() - start)
            cpu[key].append(time.process_time() - start_cpu)
            if rec.error:
                raise RuntimeError(rec.error)
            last[key] = rec
    return times, cpu, last


async def _run(args: argparse.Namespace, clip: Path, precisions: list[str]) -> None:
    config = EngineConfig()
    bundle = make_untrained_bundle()
    predictor = Predictor(bundle, torch_threads=args.threads)
    extractor, model = untrained_wav2vec2("production")
    asset = locate_face_asset(None)
    replayers: dict[str, Replayer] = {}
    for precision in precisions:
        models = ReplayModels(
            predictor=predictor,
            norm=bundle.norm,
            audio=AudioEmbedder.from_model(extractor, model, precision=precision),  # type: ignore[arg-type]
            make_face_extractor=lambda: FaceFeatureExtractor(asset),
            bundle=BundleInfo(bundle.bundle_id, False),
        )
        replayers[precision] = Replayer(config, models, jobs=1)
    for r in replayers.values():
        await r.start()
    try:
        inp = ReplayInput(clip, "bench")
        times, cpu, last = await _time_runs(replayers, inp, args.repeats)
        media = {k: rec.end_s - rec.origin for k, rec in last.items()}
        base = statistics.median(times[precisions[0]])
        cores = os.cpu_count() or 1
        ratio = "vs " + precisions[0]
        print(
            f"{'precision':<9} {'media s':>8} {'median s':>9} {'min s':>7} {'x real time':>12} {ratio:>8} "
            f"{'cpu s':>7} {'x rt by cpu':>12}"
        )
        for k in precisions:
            med = statistics.median(times[k])
            med_cpu = statistics.median(cpu[k])
            print(
                f"{k:<9} {media[k]:>8.2f} {med:>9.3f} {min(times[k]):>7.3f} {media[k] / med:>12.2f} "
                f"{med / base:>8.2f} {med_cpu:>7.2f} {media[k] / (med_cpu / cores):>12.2f}"
            )
        print(
            f"(x rt by cpu = media seconds / (CPU seconds of the process / {cores} cores): the speed the "
            "same work reaches when the cores are not shared with other jobs)"
        )
        rec = last[precisions[0]]
        print(
            f"\nper run: {len(rec.steps)} steps, {len(rec.results)} results, "
            f"{rec.counters.get('frames_sampled', 0)} frames sampled of {rec.counters.get('video_frames', 0)} decoded, "
            f"{rec.counters.get('faces', 0)} faces, {rec.counters.get('audio_windows', 0)} audio windows in "
            f"{rec.counters.get('audio_batches', 0)} batches ({rec.counters.get('audio_embedded', 0)} embedded, "
            f"{rec.counters.get('vad_gated', 0)} gated by the VAD)"
        )
        for k, r in replayers.items():
            pools = {"face": r._face_pool, "audio": r._audio_pool, "inference": r._inference_pool}
            runs = args.repeats + 1
            busy = ", ".join(f"{name} {p.stats.busy_s / runs:.2f} s" for name, p in pools.items() if p is not None)
            print(f"pool busy time per run ({k}): {busy}")
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            write_outputs(Path(tmp), [rec], [], config, replayers[precisions[0]].models)
            print(f"writing timeline.jsonl/.csv, summary.json, report.html: {time.perf_counter() - start:.3f} s")
    finally:
        for r in replayers.values():
            await r.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    torch.set_num_threads(args.threads)
    threadpool_limits(limits=args.threads)
    source = _shared_dir() / "media" / "ravdess" / "01-01-01-01-01-01-01.mp4"
    if not source.is_file():
        raise SystemExit(f"bench clip missing: {source} (set HOOVIK_SHARED)")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"torch {torch.__version__}, {args.threads} thread(s) per pool thread, {os.cpu_count()} CPUs, load {load}")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_recording(source, Path(tmp) / "bench-640x480.mp4", width=640, height=480, loops=args.loops)
        print(
            f"clip: {source.name} re-encoded to 640x480 H.264/AAC, {args.loops} loop(s); audio model: Wav2Vec2 "
            f"production architecture, random weights (seed 0); face: {locate_face_asset(None).name}"
        )
        print(f"median of {args.repeats} replays per precision, warm pools\n")
        asyncio.run(_run(args, clip, precisions))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\ntotal bench time {time.perf_counter() - t0:.0f} s; load average at the end {load}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
