"""Benchmark the Wav2Vec2 audio embedder at production size: fp32 vs bf16 vs int8, batch 1/4/8.

The real ``audeering/wav2vec2-large-robust-12-ft-emotion-msp-dim`` weights are not available
offline, so the bench builds the same architecture from its published config (hidden 1024, 12
layers, 16 heads, FFN 4096, layer-norm conv stack, stable layer norm, conv bias, 128-tap positional
conv) with seeded random weights. Speed depends on shapes only, so the timings carry over; the
cosine deviations are indicative only, since a trained model's activations are distributed
differently from random ones.

Run:  .venv/bin/python bench/bench_audio.py [--repeats N] [--threads T]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

from models.audio import AudioEmbedder, trailing_window, windows_for_times
from models.constants import AUDIO_WINDOW_SAMPLES, SAMPLE_RATE

PRECISIONS = ("fp32", "bf16", "int8")


def production_config() -> Wav2Vec2Config:
    """The audeering model's architecture (config.json of the hub model; no classification head)."""
    return Wav2Vec2Config(
        hidden_size=1024,
        num_hidden_layers=12,
        num_attention_heads=16,
        intermediate_size=4096,
        hidden_act="gelu",
        conv_dim=(512,) * 7,
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_bias=True,
        feat_extract_norm="layer",
        feat_extract_activation="gelu",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=128,
        num_conv_pos_embedding_groups=16,
        layer_norm_eps=1e-5,
        vocab_size=None,
    )


def build_model(seed: int = 0) -> tuple[Wav2Vec2FeatureExtractor, Wav2Vec2Model]:
    torch.manual_seed(seed)
    model = Wav2Vec2Model(production_config()).eval()
    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=SAMPLE_RATE,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=True,
    )
    return extractor, model


def _shared_dir() -> Path:
    env = os.environ.get("HOOVIK_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared"


def _decode_16k(path: Path) -> np.ndarray:
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
    chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    return np.concatenate(chunks).astype(np.float32)


def speech_windows(count: int) -> tuple[list[np.ndarray], str]:
    """0.6 s windows of RAVDESS speech when the shared media is present, else seeded noise."""
    wavs = sorted((_shared_dir() / "media" / "ravdess" / "audio").glob("*.wav"))
    windows: list[np.ndarray] = []
    for wav in wavs:
        signal = _decode_16k(wav)
        times = np.linspace(0.3, signal.shape[0] / SAMPLE_RATE - 0.3, 4)
        windows.extend(w for w in windows_for_times(signal, times) if w is not None)
        if len(windows) >= count:
            return windows[:count], f"RAVDESS speech ({len(wavs)} files available)"
    rng = np.random.default_rng(0)
    while len(windows) < count:
        window = trailing_window(rng.standard_normal(AUDIO_WINDOW_SAMPLES).astype(np.float32) * 0.1)
        assert window is not None
        windows.append(window)
    return windows, "seeded Gaussian noise (shared media not found)" if not wavs else "RAVDESS + noise"


def interleaved_timings(
    calls: dict[tuple[str, int], Callable[[], object]], repeats: int
) -> dict[tuple[str, int], list[float]]:
    """Call times (ms) per configuration, timing one call of each configuration per round.

    Round-robin timing spreads any background load (a shared CI box, other processes) evenly over
    the configurations, so the ratios stay meaningful even when absolute times drift.
    """
    for fn in calls.values():  # warm-up: oneDNN primitive creation, allocator growth
        fn()
    samples: dict[tuple[str, int], list[float]] = {key: [] for key in calls}
    for _ in range(repeats):
        for key, fn in calls.items():
            start = time.perf_counter()
            fn()
            samples[key].append((time.perf_counter() - start) * 1e3)
    return samples


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="timed calls per configuration (median)")
    p.add_argument("--batches", type=str, default="1,4,8", help="comma-separated batch sizes")
    p.add_argument("--precisions", type=str, default=",".join(PRECISIONS))
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    p.add_argument("--cosine-windows", type=int, default=16, help="windows for the fp32 deviation check")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    precisions = [p.strip() for p in args.precisions.split(",")]
    t0 = time.perf_counter()
    extractor, model = build_model()
    n_params = sum(p.numel() for p in model.parameters())
    windows, source = speech_windows(max(max(batches), args.cosine_windows))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load {load}")
    print(f"model: Wav2Vec2 large-robust-12 architecture, {n_params / 1e6:.1f} M params, random weights, seed 0")
    print(f"input: 0.6 s windows ({AUDIO_WINDOW_SAMPLES} samples) of {source}; median of {args.repeats} calls\n")

    embedders = {p: AudioEmbedder.from_model(extractor, model, precision=p) for p in precisions}  # type: ignore[arg-type]
    calls = {(p, b): (lambda e=emb, n=b: e.embed(windows[:n])) for p, emb in embedders.items() for b in batches}
    samples = interleaved_timings(calls, args.repeats)
    timings = {key: statistics.median(values) for key, values in samples.items()}

    header = f"{'precision':<9} {'batch':>5} {'ms/call':>9} {'ms/window':>10} {'vs fp32':>8} {'vs batch 1':>10}"
    print(f"{header} {'min ms/call':>11}")
    for precision in precisions:
        for batch in batches:
            ms = timings[precision, batch]
            vs_fp32 = ms / timings["fp32", batch] if ("fp32", batch) in timings else float("nan")
            vs_b1 = (ms / batch) / (timings[precision, batches[0]] / batches[0])
            row = f"{precision:<9} {batch:>5} {ms:>9.1f} {ms / batch:>10.1f} {vs_fp32:>8.2f} {vs_b1:>10.2f}"
            print(f"{row} {min(samples[precision, batch]):>11.1f}")

    cos_windows = windows[: args.cosine_windows]
    reference = embedders["fp32"].embed(cos_windows) if "fp32" in embedders else None
    if reference is not None:
        print(f"\ncosine to fp32 over {len(cos_windows)} windows")
        print(f"{'precision':<9} {'mean':>9} {'min':>9}")
        for precision in precisions:
            if precision != "fp32":
                cos = cosine_rows(embedders[precision].embed(cos_windows), reference)
                print(f"{precision:<9} {cos.mean():>9.5f} {cos.min():>9.5f}")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\ntotal bench time {time.perf_counter() - t0:.0f} s; load average at the end {load}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
