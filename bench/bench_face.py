"""Benchmark the face feature extractor: MediaPipe FaceLandmarker per frame on the golden PNGs.

Each golden frame (photos, CREMA-D 480×360, RAVDESS 1280×720) plus a 720×540 resize of the first
photo (the size the original's browser client sends) is embedded ``--repeats`` times in IMAGE
mode; the table shows the median per frame size, its ratio to the fastest size and its share of the
200 ms budget of a 5 fps sampler. The pure post-processing (landmarks → 326 floats) is timed
separately to show it is negligible.

Run:  .venv/bin/python bench/bench_face.py [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from models.face import FaceFeatureExtractor, face_vector_from_mediapipe

FRAME_BUDGET_MS = 200.0  # 5 fps sampler


def _golden_dir() -> Path:
    env = os.environ.get("HOOVIK_SHARED")
    shared = Path(env) if env else Path(__file__).resolve().parents[2] / "shared"
    return shared / "reference" / "golden"


def load_frames(golden: Path) -> dict[str, np.ndarray]:
    """Golden frames that have a face, plus a 720×540 live-size resize of the first photo."""
    manifest = json.loads((golden / "manifest.json").read_text())
    frames: dict[str, np.ndarray] = {}
    for entry in manifest["faces"]:
        if entry["meta"]["face_found"]:
            with Image.open(golden / "faces" / f"{entry['meta']['id']}.png") as img:
                frames[entry["meta"]["id"]] = np.asarray(img.convert("RGB"))
    with Image.open(golden / "faces" / "photo_1.png") as img:
        frames["photo_1@720x540"] = np.asarray(img.convert("RGB").resize((720, 540), Image.BILINEAR))
    return frames


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _row(label: str, count: int, ms: float, fastest: float) -> None:
    print(f"{label:<10} {count:>6} {ms:>10.2f} {ms / fastest:>10.2f} {ms / FRAME_BUDGET_MS:>10.1%}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=20, help="timed calls per frame (median)")
    p.add_argument("--asset", type=Path, default=None, help="face_landmarker.task (default: lookup order)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    golden = _golden_dir()
    frames = load_frames(golden)
    t0 = time.perf_counter()
    with FaceFeatureExtractor(args.asset) as extractor:
        print(f"asset: {extractor.asset_path}; {os.cpu_count()} CPUs; median of {args.repeats} calls/frame\n")
        per_frame = {
            fid: median_ms(lambda f=frame: extractor.extract(f), args.repeats) for fid, frame in frames.items()
        }
        assert extractor.stats["no_face"] == 0, extractor.stats

    by_size: dict[str, list[float]] = {}
    for fid, ms in per_frame.items():
        h, w = frames[fid].shape[:2]
        by_size.setdefault(f"{w}x{h}", []).append(ms)
    fastest = min(statistics.median(v) for v in by_size.values())
    print(f"{'frame size':<10} {'frames':>6} {'median ms':>10} {'vs fastest':>10} {'of 200 ms':>10}")
    for size, values in sorted(by_size.items(), key=lambda kv: statistics.median(kv[1])):
        _row(size, len(values), statistics.median(values), fastest)
    overall = statistics.median(per_frame.values())
    _row("all", len(per_frame), overall, fastest)

    faces = golden / "faces"
    landmarks = np.load(faces / "photo_1.mp_landmarks.npy")
    matrix = np.load(faces / "photo_1.mp_matrix.npy")
    names = json.loads((golden / "manifest.json").read_text())["mp_blendshape_names_52"]
    blend = dict(zip(names, np.load(faces / "photo_1.mp_blendshapes.npy").tolist(), strict=True))
    post = median_ms(lambda: face_vector_from_mediapipe(landmarks, blend, matrix), max(args.repeats, 200))
    print(f"\npost-processing only (raw outputs -> 326 floats): {post * 1e3:.1f} µs ({post / overall:.2%})")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"total bench time {time.perf_counter() - t0:.0f} s; load average at the end {load}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
