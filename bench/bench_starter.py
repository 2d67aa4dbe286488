"""The starter bundle's cost per result, beyond the MediaPipe landmarker, against the reference stack.

Usage: .venv/bin/python bench/bench_starter.py [--bundle DIR] [--repeats N] [--reference-audio production|small]

One starter result = one face crop + mini-Xception forward (the landmarks are MediaPipe's, which
both families pay and which is timed separately), one 1.0 s audio window's log-mel statistics, and
the predictor's share of a batched call (speaker normalisation + pooling + head + fusion + anomaly).
The reference result = one Wav2Vec2 window (production size, seeded weights: the cost does not
depend on the values) + its predictor share (production-size untrained bundle: 18,900 trees).
Everything runs on one thread, as in the bot's pools. Prints medians and ratios.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from _timing import median_cpu_ms, median_ms  # bench/ is on sys.path when a bench script runs
from threadpoolctl import threadpool_limits

from models.family import load_any_bundle
from models.starter.shipped import starter_bundle_dir

SHARED = Path(__file__).resolve().parents[2] / "shared"


def _photo() -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(SHARED / "media" / "photos" / "1.jpg").convert("RGB"))


def starter_costs(bundle_dir: Path, repeats: int, cpu: bool = False) -> dict[str, float]:
    """Median ms per part: wall time, or with ``cpu`` this thread's CPU time (the issue's measure)."""
    median = median_cpu_ms if cpu else median_ms
    from models.starter.face_crop import aligned_face_crop

    loaded = load_any_bundle(bundle_dir)
    face = loaded.face_factory()()
    rgb = _photo()
    landmarks = face.landmarks_px(rgb)  # type: ignore[attr-defined]
    assert landmarks is not None, "no face in the benchmark photo"
    model = face.model  # type: ignore[attr-defined]
    out: dict[str, float] = {}
    out["landmarker (both families)"] = median(lambda: face.landmarks_px(rgb), repeats)  # type: ignore[attr-defined]
    out["face crop"] = median(lambda: aligned_face_crop(rgb, landmarks), repeats)
    crop = aligned_face_crop(rgb, landmarks)
    out["mini-Xception"] = median(lambda: model.predict_proba(crop[None]), repeats)
    from models.extractors import starter_audio_extractor

    audio = starter_audio_extractor(loaded.plan.audio)
    window = (np.random.default_rng(0).standard_normal(loaded.plan.window_samples) * 0.1).astype(np.float32)
    out["audio features (1 window)"] = median(lambda: audio.embed([window]), repeats)
    predictor = loaded.make_predictor(1)
    rng = np.random.default_rng(1)
    for batch in (1, 10):
        xf = rng.dirichlet(np.ones(7), size=(batch, 10)).astype(np.float32)
        norm = loaded.plan.new_normaliser()
        xa = np.stack(
            [norm.normalise_audio(rng.standard_normal((10, loaded.plan.audio_dim)), np.ones(10)) for _ in range(batch)]
        )
        ones = np.ones((batch, 10), np.float32)
        ms = median(lambda xf=xf, xa=xa, ones=ones: predictor.predict_batch(xf, xa, ones, ones), repeats)
        out[f"predictor, batch {batch} (per result)"] = ms / batch
    face.close()
    return out


def reference_costs(size: str, repeats: int) -> dict[str, float]:
    import tempfile

    from models.audio import AudioEmbedder
    from models.bundle import load_bundle
    from models.predictor import Predictor
    from models.untrained import ensure_production_bundle, untrained_wav2vec2

    extractor, w2v = untrained_wav2vec2(size)
    emb = AudioEmbedder.from_model(extractor, w2v)
    window = (np.random.default_rng(0).standard_normal(9600) * 0.1).astype(np.float32)
    out: dict[str, float] = {}
    out[f"Wav2Vec2 {size} fp32 (1 window)"] = median_ms(lambda: emb.embed([window]), max(3, repeats // 10))
    bundle = load_bundle(ensure_production_bundle(Path(tempfile.mkdtemp())))
    predictor = Predictor(bundle, torch_threads=1, skip_unweighted=True)
    rng = np.random.default_rng(1)
    for batch in (1, 10):
        xf = rng.standard_normal((batch, 10, 326)).astype(np.float32)
        xa = rng.standard_normal((batch, 10, 1024)).astype(np.float32)
        ones = np.ones((batch, 10), np.float32)
        ms = median_ms(
            lambda xf=xf, xa=xa, ones=ones: predictor.predict_batch(xf, xa, ones, ones), max(5, repeats // 5)
        )
        out[f"predictor, batch {batch} (per result)"] = ms / batch
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", help="starter bundle directory (default: the shipped one)")
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("--reference-audio", choices=["production", "small"], default="production")
    p.add_argument("--no-reference", action="store_true", help="time the starter only")
    p.add_argument("--cpu", action="store_true", help="the starter's CPU time per part instead of wall time")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    threadpool_limits(1)
    bundle = Path(args.bundle) if args.bundle else starter_bundle_dir()
    s = starter_costs(bundle, args.repeats, cpu=args.cpu)
    kind = "CPU time" if args.cpu else "wall time"
    print(f"starter bundle {bundle}  (1 thread, medians of {args.repeats}, {kind})")
    for k, v in s.items():
        print(f"  {k:<40}{v:>9.3f} ms")
    starter_total = s["face crop"] + s["mini-Xception"] + s["audio features (1 window)"]
    for batch in (1, 10):
        total = starter_total + s[f"predictor, batch {batch} (per result)"]
        print(f"  {'= one result beyond the landmarker, batch ' + str(batch):<40}{total:>9.3f} ms")
    if args.no_reference:
        return 0
    r = reference_costs(args.reference_audio, args.repeats)
    print("reference stack (production-size models, 1 thread)")
    for k, v in r.items():
        print(f"  {k:<40}{v:>9.3f} ms")
    for batch in (1, 10):
        ref = r[f"Wav2Vec2 {args.reference_audio} fp32 (1 window)"] + r[f"predictor, batch {batch} (per result)"]
        mine = starter_total + s[f"predictor, batch {batch} (per result)"]
        print(f"  batch {batch}: reference {ref:.1f} ms vs starter {mine:.2f} ms per result = {ref / mine:.0f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
