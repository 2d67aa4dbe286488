"""Side by side with the original emotion service: the same Socket.IO upload load against either.

The load is what Hoovik's host browser sends (docs/hoovik.md describes its emotion-service client; the rules
are restated here): per participant one socket with ``auth.participantId``, a 100 ms float32 chunk
of 16 kHz speech every 100 ms (``audio_chunk``) and a 720x540 JPEG (quality 82) every 200 ms
(``emotion.frame``), participants staggered by 80 ms. Every participant speaks and shows a face,
so every result should say ``both``.

Reported per participant count: results/s (mean and slowest), the share of results that said
``both``, ``audio_only`` and ``video_only`` (which modality dropped out), the service's own
``latencyMs`` (p50/p95) and, when the service reports it, the processing time alone. **The two
services define ``latencyMs`` differently**: the original counts embedding + inference of one pump
iteration; this project counts from the arrival of the newest input a result used to the result
(input age included), and reports embedding + inference as ``processingMs``. Compare
``processingMs`` (ours) with ``latencyMs`` (original) for processing, and results/s and the
``both`` share as they are. CPU is the service process's, from psutil. Against this project it
also prints the engine's counters for the bench's participants (late and skipped steps, throttled
faces, windows embedded, gated, late or skipped while one was in flight) and the sampling fps,
from ``/stats/json``: why a modality dropped out.

Against this project (starts the endpoint in a child process)::

    python bench/bench_side_by_side.py --participants 1,5,10 --bundle reference \
        --audio-model untrained:production --precision fp32

Against the original: start it as its README says (``uvicorn app:app --port 5002`` in its
``emotion_service/`` folder, with the same artefacts), then::

    python bench/bench_side_by_side.py --url http://127.0.0.1:5002 --pid <uvicorn pid> --participants 1,5,10

Run both on the same machine, one after the other, with nothing else running.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import psutil
import socketio
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HOOVIK_SHARED", REPO.parent / "shared"))
CHUNK = 1600  # samples: 100 ms at 16 kHz, as the browser's AudioWorklet sends
FRAME_PERIOD_S = 0.2  # max(200, 1000 / targetFps) ms with targetFps 5
STAGGER_S = 0.08  # the capture loop waits 80 ms between participants


def _media(clip: Path) -> tuple[np.ndarray, list[bytes]]:
    """(16 kHz float32 speech, JPEG frames at 5 fps drawn on a 720x540 canvas) from one clip."""
    audio: list[np.ndarray] = []
    frames: list[bytes] = []
    resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
    with av.open(str(clip)) as c:
        for frame in c.decode(audio=0):
            audio.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
    with av.open(str(clip)) as c:
        next_t = 0.0
        for frame in c.decode(video=0):
            if frame.time is None or frame.time < next_t:
                continue
            next_t += FRAME_PERIOD_S
            buf = io.BytesIO()
            Image.fromarray(frame.to_ndarray(format="rgb24")).resize((720, 540)).save(buf, "JPEG", quality=82)
            frames.append(buf.getvalue())
    return np.concatenate(audio).astype(np.float32), frames


@dataclass
class Participant:
    pid: str
    client: socketio.AsyncClient = field(default_factory=lambda: socketio.AsyncClient(reconnection=False))
    results: list[tuple[float, dict[str, Any]]] = field(default_factory=list)


async def _send(p: Participant, speech: np.ndarray, frames: list[bytes], offset: float, stop: float) -> None:
    """Real-time pacing: a chunk every 100 ms, a frame every 200 ms, from ``offset`` on."""
    await asyncio.sleep(offset)
    start = time.monotonic()
    i = 0
    while time.monotonic() < stop:
        pos = (i * CHUNK) % (speech.size - CHUNK)
        await p.client.emit("audio_chunk", speech[pos : pos + CHUNK].tobytes())
        if i % 2 == 0:
            buffer = frames[(i // 2) % len(frames)]
            await p.client.emit("emotion.frame", {"meetingId": "BENCH", "participantId": p.pid, "buffer": buffer})
        i += 1
        await asyncio.sleep(max(0.0, start + i * 0.1 - time.monotonic()))


def _pct(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p95": float("nan")}
    arr = np.asarray(values)
    return {"p50": round(float(np.percentile(arr, 50)), 1), "p95": round(float(np.percentile(arr, 95)), 1)}


async def run_load(url: str, n: int, duration: float, warmup: float, media: tuple[np.ndarray, list[bytes]],
                   server_pid: int | None) -> dict[str, Any]:  # fmt: skip
    speech, frames = media
    parts = [Participant(f"bench-{n}-{k}") for k in range(n)]
    for p in parts:
        p.client.on("emotion.result", lambda data, p=p: p.results.append((time.monotonic(), data)))
        await p.client.connect(url, transports=["websocket"], auth={"participantId": p.pid}, wait_timeout=20)
    proc = psutil.Process(server_pid) if server_pid else None
    begin = time.monotonic()
    measure_from, stop = begin + warmup, begin + warmup + duration
    senders = [asyncio.create_task(_send(p, speech, frames, k * STAGGER_S, stop)) for k, p in enumerate(parts)]
    await asyncio.sleep(max(0.0, measure_from - time.monotonic()))
    cpu0 = sum(proc.cpu_times()[:2]) if proc else 0.0
    await asyncio.gather(*senders)
    cpu = (sum(proc.cpu_times()[:2]) - cpu0) / duration if proc else float("nan")
    engine = _engine_counters(url, {p.pid for p in parts})
    for p in parts:
        await p.client.disconnect()
    rates, lat, proc_ms = [], [], []
    profiles: Counter[str] = Counter()
    for p in parts:
        kept = [m for t, m in p.results if measure_from <= t <= stop]
        rates.append(len(kept) / duration)
        profiles.update(str(m["result"]["modality"]) for m in kept)
        lat.extend(float(m["latencyMs"]) for m in kept if m.get("latencyMs") is not None)
        proc_ms.extend(float(m["processingMs"]) for m in kept if m.get("processingMs") is not None)
    return {
        "participants": n,
        "rate_mean": round(statistics.fmean(rates), 2),
        "rate_min": round(min(rates), 2),
        "both_share": _share(profiles, "both"),
        "audio_only_share": _share(profiles, "audio_only"),
        "video_only_share": _share(profiles, "video_only"),
        "latency_ms": _pct(lat),
        "processing_ms": _pct(proc_ms),
        "server_cpu_cores": round(cpu, 2),
        "engine": engine,
    }


def _share(profiles: Counter[str], key: str) -> float:
    total = sum(profiles.values())
    return round(profiles[key] / total, 3) if total else float("nan")


ENGINE_COUNTERS = ("steps_late", "steps_skipped", "face_throttled", "face_busy", "face_late", "faces",
                   "audio_embedded", "audio_busy", "audio_late", "vad_gated", "results")  # fmt: skip


def _engine_counters(url: str, pids: set[str]) -> dict[str, Any] | None:
    """This project's engine counters for the bench's participants (why a modality dropped out:
    late or skipped steps, throttled or busy faces, audio still in flight, VAD), summed over them,
    and the sampling fps. None for a service without ``/stats/json`` in this shape (the original)."""
    try:
        with urllib.request.urlopen(f"{url}/stats/json", timeout=5) as r:
            stats = json.load(r)
        rows = [p for p in stats["participants"] if p["participantId"] in pids]
    except Exception:
        return None
    total: Counter[str] = Counter()
    for row in rows:
        total.update({k: int(v) for k, v in row.get("counters", {}).items() if k in ENGINE_COUNTERS})
    fps = [float(p.get("samplingFps", 0.0)) for p in rows]
    return {"counters": dict(sorted(total.items())), "sampling_fps": round(min(fps), 2) if fps else None}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_ours(args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    cmd = [sys.executable, __file__, "--serve", str(port), "--bundle", args.bundle,
           "--audio-model", args.audio_model, "--precision", args.precision]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=REPO)
    assert proc.stdout is not None
    for raw in proc.stdout:
        if raw.startswith(b"ready"):
            return proc, f"http://127.0.0.1:{port}"
    raise SystemExit("the emotion-service endpoint did not start (see its output above)")


async def _serve(args: argparse.Namespace) -> None:
    """Child mode: this project's emotion-service endpoint alone, with the chosen models."""
    from bot.config import BotConfig
    from bot.service import BotService
    from bot.uploads.access import EmotionServiceOptions
    from models.assets import cache_dir
    from models.untrained import ensure_production_bundle

    cfg = BotConfig.load(None)
    # "reference": the production-size reference bundle (untrained weights, the real cost), as
    # bench_realtime.py uses; "starter" or a bundle folder as ``--bundle`` takes them.
    bundle = str(ensure_production_bundle(cache_dir() / "bundles")) if args.bundle == "reference" else args.bundle
    cfg.models.bundle, cfg.models.audio_model = bundle, args.audio_model
    cfg.models.audio_precision = args.precision
    cfg.server.http_port = int(args.serve)
    options = EmotionServiceOptions(max_upload_participants=64, upload_share=1.0)
    service = BotService(cfg, emotion_service=options)
    await service.start_http()
    await service.load(allow_untrained_audio=True)
    print("ready", flush=True)
    await asyncio.Event().wait()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="an emotion service to load (default: start this project's)")
    p.add_argument("--pid", type=int, help="the service's process id, for its CPU (with --url)")
    p.add_argument("--participants", default="1,5,10")
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--warmup", type=float, default=10.0)
    p.add_argument("--clip", default=str(SHARED / "media" / "crema-d" / "1001_DFA_ANG_XX.flv"))
    p.add_argument("--bundle", default="reference")
    p.add_argument("--audio-model", default="untrained:production")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "int8"])
    p.add_argument("--json", help="write the rows here too")
    p.add_argument("--serve", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        asyncio.run(_serve(args))
        return 0
    clip = Path(args.clip)
    if not clip.exists():
        raise SystemExit(f"clip missing: {clip} (the shared media folder sits beside the checkout)")
    media = _media(clip)
    child, url = (None, args.url) if args.url else _start_ours(args)
    pid = args.pid if args.url else child.pid if child else None
    rows = []
    try:
        for n in (int(x) for x in args.participants.split(",")):
            rows.append(asyncio.run(run_load(url, n, args.duration, args.warmup, media, pid)))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        if child is not None:
            child.terminate()
            child.wait(20)
    print(f"\n{'N':>3} {'res/s mean':>10} {'min':>6} {'both':>6} {'audio_only':>10} {'video_only':>10} "
          f"{'latency p50':>12} {'p95':>7} "
          f"{'processing p50':>15} {'p95':>7} {'CPU cores':>9}")  # fmt: skip
    for r in rows:
        print(f"{r['participants']:>3} {r['rate_mean']:>10} {r['rate_min']:>6} {r['both_share']:>6} "
              f"{r['audio_only_share']:>10} {r['video_only_share']:>10} "
              f"{r['latency_ms']['p50']:>12} {r['latency_ms']['p95']:>7} {r['processing_ms']['p50']:>15} "
              f"{r['processing_ms']['p95']:>7} {r['server_cpu_cores']:>9}")  # fmt: skip
    for r in rows:
        if r.get("engine"):
            print(f"N={r['participants']} engine: {json.dumps(r['engine'])}")
    if len(rows) > 1:
        base = rows[0]
        print(f"ratios to N={base['participants']}: " + ", ".join(
            f"N={r['participants']}: rate x{r['rate_mean'] / base['rate_mean']:.2f}, "
            f"latency p50 x{r['latency_ms']['p50'] / base['latency_ms']['p50']:.2f}" for r in rows[1:]))  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
