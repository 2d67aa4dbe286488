"""The frame gate keeps a 5 fps client's frames and holds a fast one to 5 fps; both upload streams
of a participant share one media clock, so results' ``mediaTime`` is monotonic.

The probe: the original's 0.2 s gate (``accept_after = now + 0.2``) dropped ~36 % of the frames of
a client sending at exactly 5 fps; video ran on wall time since the first frame while audio ran on
its sample count since the first chunk, so ``mediaTime`` mixed two timelines.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from test_uploads import client, endpoint, jpeg, speech_16k  # noqa: F401  (fixtures)

from bot.config import BotConfig
from bot.runtime import Runtime
from bot.service import BotService
from bot.uploads.access import EmotionServiceOptions
from bot.uploads.timing import AUDIO_MAX_LAG_S, FRAME_BURST, FrameGate, MediaClock

CHUNK_S = 0.1


def tiny_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (90, 120, 150)).save(buf, format="JPEG")
    return buf.getvalue()


async def until(cond: Any, what: str, info: Any = None) -> None:
    """A tight poll (the endpoint is driven by an injected clock; each step waits for the server)."""
    deadline = time.monotonic() + 20
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; {info() if callable(info) else info}")
        await asyncio.sleep(0.002)


# --- the gate -----------------------------------------------------------------------------------


def accepted(times: list[float], fps: float = 5.0) -> int:
    gate = FrameGate(fps)
    return sum(gate.admit(t) for t in times)


def test_gate_keeps_an_exact_or_jittery_5fps_client_and_holds_30fps_to_5fps() -> None:
    seconds = 60
    exact = [1000.0 + k * 0.2 for k in range(5 * seconds)]
    assert accepted(exact) == len(exact)
    rng = random.Random(7)
    jittery = [1000.0 + k * 0.2 + rng.uniform(-0.04, 0.04) for k in range(5 * seconds)]
    assert accepted(jittery) >= 0.95 * len(jittery)
    # The stock UI: 80 ms between participants in a shuffled pass every 200 ms (4 participants).
    shuffled = [1000.0 + k * 0.2 + 0.08 * rng.randrange(4) for k in range(5 * seconds)]
    assert accepted(shuffled) >= 0.95 * len(shuffled)
    fast = [1000.0 + k / 30 for k in range(30 * seconds)]
    n = accepted(fast)
    assert 5 * seconds - 1 <= n <= 5 * seconds + FRAME_BURST
    # Over any 2 s window the fast client gets no more than 5 fps plus the burst.
    gate = FrameGate(5.0)
    admitted = [t for t in fast if gate.admit(t)]
    for i, t in enumerate(admitted):
        assert sum(1 for u in admitted[i:] if u < t + 2.0) <= 10 + FRAME_BURST


async def test_gate_through_the_endpoint(endpoint: Any) -> None:  # noqa: F811
    service, url, engine, clock = await endpoint()
    image = tiny_jpeg()
    slow, fast = await client(url, "u-5fps"), await client(url, "u-30fps")

    def handled() -> int:
        c = service.counters
        return c.get("frames", 0) + c.get("frames_gated", 0) + c.get("frames_dropped_busy", 0)

    try:
        # Exactly 5 fps for 10 s, then 30 fps for 4 s, on the endpoint's clock.
        for ui, n, dt in ((slow, 50, 0.2), (fast, 120, 1 / 30)):
            for _ in range(n):
                before = handled()
                await ui.emit("emotion.frame", image)
                await until(lambda before=before: handled() == before + 1, "frame handled", lambda: service.counters)
                clock.now += dt
        await until(lambda: service.counters.get("frames", 0) + service.counters.get("frames_gated", 0) == 170, "all")
        kept_slow = len(engine.of("frame", "u-5fps"))
        kept_fast = len(engine.of("frame", "u-30fps"))
        assert kept_slow >= 0.95 * 50, kept_slow
        assert 4 * 5 - 1 <= kept_fast <= 4 * 5 + FRAME_BURST, kept_fast
    finally:
        await slow.close()
        await fast.close()


# --- one media clock ----------------------------------------------------------------------------


def test_media_clock_rules() -> None:
    mc = MediaClock()
    assert mc.video_time(100.0) == 0.0  # the first upload starts the clock
    assert mc.audio_time(100.5, CHUNK_S) == pytest.approx(0.5)  # audio anchored to the same clock
    assert mc.audio_time(100.6, CHUNK_S) == pytest.approx(0.6)  # then advanced by its samples
    assert mc.audio_time(100.72, CHUNK_S) == pytest.approx(0.7)  # a late chunk: sample time (jitter)
    assert mc.audio_time(100.75, CHUNK_S) == pytest.approx(0.75)  # a burst: never ahead of arrival
    assert mc.audio_time(100.75, CHUNK_S) == pytest.approx(0.75)
    assert mc.audio_time(104.0, CHUNK_S) == pytest.approx(4.0)  # a gap: re-anchored to arrival
    assert mc.video_time(104.1) == pytest.approx(4.1)
    assert mc.accept_video(4.1) and not mc.accept_video(3.9)  # decodes finishing out of order


async def test_both_streams_share_one_clock_through_the_endpoint(endpoint: Any) -> None:  # noqa: F811
    service, url, engine, clock = await endpoint()
    ui = await client(url, "u-clock")
    image = tiny_jpeg()
    chunk = (np.zeros(1600, dtype=np.float32) + 0.01).tobytes()
    rng = random.Random(3)
    arrivals: dict[str, list[float]] = {"audio": [], "frame": []}
    start = clock.now
    try:
        # Video first; audio joins 2 s later; a 3 s pause in the audio; jittery arrivals throughout.
        for k in range(80):
            t = start + k * 0.1 + (rng.uniform(0.0, 0.03) if k else 0.0)
            clock.now = max(clock.now, t)
            kinds = (["frame"] if k % 2 == 0 else []) + (["audio"] if 20 <= k < 40 or k >= 70 else [])
            for kind in kinds:
                n = len(engine.of(kind))
                await ui.emit(
                    "audio_chunk" if kind == "audio" else "emotion.frame", chunk if kind == "audio" else image
                )
                await until(lambda n=n, kind=kind: len(engine.of(kind)) == n + 1, kind, lambda: service.counters)
                arrivals[kind].append(clock.now - start)
        audio = [c[3] for c in engine.of("audio")]
        video = [c[3] for c in engine.of("frame")]
        assert video == pytest.approx(arrivals["frame"])  # frames: their arrival on the clock
        assert audio == sorted(audio) and video == sorted(video)
        for t, arrived in zip(audio, arrivals["audio"], strict=True):
            assert arrived - AUDIO_MAX_LAG_S - 1e-9 <= t <= arrived + 1e-9  # the same clock, never ahead
        assert audio[0] == pytest.approx(arrivals["audio"][0])  # starts at ~2 s, not at 0
        assert audio[20] == pytest.approx(arrivals["audio"][20])  # re-anchored after the pause
    finally:
        await ui.close()


async def test_media_time_of_results_is_monotonic_with_the_real_engine(
    hoovik_bot_config: BotConfig,
    hoovik_runtime: Runtime,
    media_dir: Path,
    jpeg: bytes,  # noqa: F811
) -> None:
    """Frames from the start, speech from 1.5 s on: one timeline, so results never step back."""
    service = BotService(hoovik_bot_config, emotion_service=EmotionServiceOptions())
    await service.start_http()
    await service.load(hoovik_runtime)
    ui = await client(f"http://127.0.0.1:{service.http_port}", "u-mono")
    speech = speech_16k(media_dir / "ravdess" / "audio" / "03-01-03-01-01-01-02.wav")
    t0 = time.monotonic()
    try:

        async def stream() -> None:
            for k in range(10**6):
                msgs = ui.messages()
                if sum(m["result"]["modality"] == "both" for m in msgs) >= 4 and len(msgs) >= 8:
                    return
                if k % 2 == 0:
                    await ui.emit("emotion.frame", jpeg)
                if k >= 15:
                    i = ((k - 15) * 1600) % (speech.size - 1600)
                    await ui.emit("audio_chunk", speech[i : i + 1600].tobytes())
                await asyncio.sleep(max(0.0, t0 + (k + 1) * CHUNK_S - time.monotonic()))

        await asyncio.wait_for(stream(), 40)
        elapsed = time.monotonic() - t0
        times = [m["mediaTime"] for m in ui.messages() if m["mediaTime"] is not None]
        assert len(times) >= 8
        # Monotonic on one clock (audio may trail the frames' arrival times by its bounded lag).
        for a, b in itertools.pairwise(times):
            assert b >= a - AUDIO_MAX_LAG_S - 1e-6, times
        assert all(0.0 <= t <= elapsed for t in times)
        audio_results = [m for m in ui.messages() if m["result"]["modality"] in ("both", "audio_only")]
        # Audio started ~1.5 s after the first frame: on one clock its media times are past that.
        assert audio_results and min(m["mediaTime"] for m in audio_results) >= 1.0
    finally:
        await ui.close()
        await service.stop()
