"""Telemetry over real HTTP: /health, /ready (503 until the models load), /stats/json, /stats, /metrics.

The bot service runs its real HTTP server and real engine (golden bundle, MediaPipe with the shared
face asset, a tiny Wav2Vec2, Silero VAD); media is fed to the engine directly: a real face photo
and a real RAVDESS sentence, paced like a camera and a microphone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.config import BotConfig
from bot.pipeline.intraop import available_cores
from bot.pipeline.results import EmotionResult
from bot.runtime import Runtime
from bot.service import BotService
from models.audio import AudioEmbedder
from models.bundle import load_bundle
from models.constants import SAMPLE_RATE
from models.predictor import Predictor


@pytest.fixture(scope="module")
def runtime(golden_bundle_dir: Path, tiny_wav2vec2_dir: Path, face_asset: Path) -> Runtime:
    bundle = load_bundle(golden_bundle_dir)
    embedder = AudioEmbedder(str(tiny_wav2vec2_dir))
    return Runtime(bundle, Predictor(bundle, torch_threads=1), embedder, face_asset, "tiny", False)


@pytest.fixture(scope="module")
def media(media_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(RGB photo with a face, a 16 kHz RAVDESS sentence)."""
    with av.open(str(media_dir / "photos" / "1.jpg")) as c:
        photo = next(c.decode(video=0)).to_ndarray(format="rgb24")
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    wav = sorted((media_dir / "ravdess" / "audio").glob("*.wav"))[0]
    chunks = []
    with av.open(str(wav)) as c:
        for frame in c.decode(audio=0):
            chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
    return photo, np.concatenate(chunks).astype(np.float32)


@pytest.fixture
async def service() -> AsyncIterator[BotService]:
    cfg = BotConfig()
    cfg.server.http_port = 0
    svc = BotService(cfg)
    try:
        yield svc
    finally:
        await svc.stop()


async def get(http: aiohttp.ClientSession, port: int, path: str) -> tuple[int, str, str]:
    async with http.get(f"http://127.0.0.1:{port}{path}") as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


async def feed(svc: BotService, pid: str, photo: np.ndarray, speech: np.ndarray, stop: asyncio.Event) -> None:
    """A camera at 15 fps and a microphone in 20 ms chunks, looping the sentence."""
    assert svc.engine is not None
    t0 = time.monotonic()
    n = 0
    chunk = SAMPLE_RATE // 50
    while not stop.is_set():
        media_time = n * 0.02
        start = (n * chunk) % (len(speech) - chunk)
        svc.engine.on_audio(pid, speech[start : start + chunk], media_time + 0.02)
        if n % 3 == 0:
            svc.engine.on_video_frame(pid, photo, media_time)
        n += 1
        await asyncio.sleep(max(0.0, t0 + n * 0.02 - time.monotonic()))


def metric_samples(text: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


async def test_endpoints_before_and_after_the_models_load(
    service: BotService, runtime: Runtime, media: tuple[np.ndarray, np.ndarray]
) -> None:
    port = await service.start_http()
    async with aiohttp.ClientSession() as http:
        # Up but not ready: health answers, ready says 503 with FastAPI's body shape (spec 2.6).
        status, _, body = await get(http, port, "/health")
        assert status == 200 and json.loads(body) == {"status": "ok"}
        status, ctype, body = await get(http, port, "/ready")
        assert status == 503 and "json" in ctype
        assert json.loads(body) == {"detail": {"status": "not_ready"}}
        status, _, body = await get(http, port, "/stats/json")
        stats = json.loads(body)
        assert status == 200 and stats["ready"] is False and stats["active_participants"] == 0
        assert stats["modalities"] == {"audio_only": {}, "video_only": {}, "both": {}} and stats["overall"] == {}
        status, _, body = await get(http, port, "/metrics")
        assert metric_samples(body)["hoovik_ready"][0].value == 0.0

        await service.load(runtime)
        status, _, body = await get(http, port, "/ready")
        assert status == 200 and json.loads(body) == {"status": "ready"}

        results: list[EmotionResult] = []
        service.result_listeners.append(results.append)
        assert service.engine is not None
        service.engine.add_participant("alice", "Alice")
        service.engine.add_participant("bob", "Bob", mic=False)  # camera only
        photo, speech = media
        stop = asyncio.Event()
        feeders = [asyncio.create_task(feed(service, pid, photo, speech, stop)) for pid in ("alice", "bob")]
        try:
            deadline = time.monotonic() + 30
            while not (
                sum(r.participant_id == "alice" for r in results) >= 6
                and any(r.participant_id == "bob" for r in results)
            ):
                assert time.monotonic() < deadline, f"no results: {service.telemetry.stats()}"
                await asyncio.sleep(0.1)

            # /stats/json: the original's shape plus per-participant detail.
            status, ctype, body = await get(http, port, "/stats/json")
            stats = json.loads(body)
            assert status == 200 and "json" in ctype
            assert isinstance(stats["generated_at"], float) and stats["active_participants"] == 2
            assert set(stats["modalities"]) == {"audio_only", "video_only", "both"}
            summary_keys = {"n", "min", "mean", "p50", "p90", "p95", "max"}
            assert set(stats["overall"]) == summary_keys and stats["overall"]["n"] >= 6
            for m in stats["modalities"].values():
                assert m == {} or set(m) == summary_keys
            parts = {p["participantId"]: p for p in stats["participants"]}
            alice, bob = parts["alice"], parts["bob"]
            assert alice["profile"] in ("both", "video_only", "audio_only") and bob["profile"] == "video_only"
            for p in (alice, bob):
                assert p["samplingFps"] > 0 and p["resultsPerSecond"] > 0
                assert set(p["queues"]) == {"face", "audio", "inference"}
                assert isinstance(p["drops"], dict) and {"p50", "p95", "max", "n"} <= set(p["latencyMs"])
            assert alice["counters"].get("faces", 0) > 0  # MediaPipe found the face in the photo
            assert set(stats["pools"]) == {"face", "audio", "inference"}
            assert sum(stats["pools"]["inference"]["batchSizes"].values()) >= 1
            assert stats["throttle"]["floorFps"] == 1.0 and stats["vad"]["enabled"] is True
            assert stats["process"]["rssBytes"] > 0 and stats["model"]["bundleId"].startswith("hb-")
            # Two participants: light, so a forward may use every core (bot/pipeline/intraop.py).
            assert stats["intraOp"]["boost"] == available_cores()
            assert stats["intraOp"]["threads"] == available_cores()
            # CPU by stage: MediaPipe's threads count for the faces, the loop for itself.
            if sys.platform.startswith("linux"):
                assert set(stats["cpuByStage"]) == {"loop", "decode", "face", "audio", "inference", "other"}
                assert stats["cpuByStage"]["face"] > 0 and stats["cpuByStage"]["loop"] > 0

            # /metrics: Prometheus text, read from the engine at scrape time.
            status, ctype, body = await get(http, port, "/metrics")
            assert status == 200 and ctype.startswith("text/plain")
            samples = metric_samples(body)
            assert samples["hoovik_ready"][0].value == 1.0
            assert samples["hoovik_participants"][0].value == 2
            by_modality = {s.labels["modality"]: s.value for s in samples["hoovik_results_total"]}
            assert sum(by_modality.values()) >= 7
            assert any(s.labels["le"] == "+Inf" for s in samples["hoovik_result_latency_seconds_bucket"])
            assert {s.labels["pool"] for s in samples["hoovik_queue_depth"]} == {"face", "audio", "inference"}
            assert {s.labels["participant"] for s in samples["hoovik_participant_results_total"]} == {"alice", "bob"}
            assert {s.labels["reason"] for s in samples["hoovik_audio_gated_windows_total"]} == {"no_speech", "silence"}
            assert {s.labels["participant"] for s in samples["hoovik_participant_vad_gated_windows_total"]} == {
                "alice",
                "bob",
            }
            assert samples["hoovik_sampling_fps"][0].value > 0
            assert samples["hoovik_torch_intraop_threads"][0].value == available_cores()
            if sys.platform.startswith("linux"):
                stages = {x.labels["stage"]: x.value for x in samples["hoovik_stage_cpu_seconds_total"]}
                assert stages["face"] > 0 and set(stages) == set(stats["cpuByStage"])
            assert samples["process_resident_memory_bytes"][0].value > 0
            assert any(s.labels["pool"] == "inference" for s in samples["hoovik_pool_batches_total"])

            # A participant who left has no series any more.
            service.engine.remove_participant("bob")
            _, _, body = await get(http, port, "/metrics")
            samples = metric_samples(body)
            assert {s.labels["participant"] for s in samples["hoovik_participant_results_total"]} == {"alice"}

            # /stats: a self-refreshing page over /stats/json.
            status, ctype, body = await get(http, port, "/stats")
            assert status == 200 and ctype.startswith("text/html")
            assert 'fetch("stats/json")' in body and "setInterval(refresh" in body
        finally:
            stop.set()
            for task in feeders:
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def test_telemetry_access_loopback_by_default_bearer_token_and_read_only() -> None:
    """Names and media state are in /stats* and /metrics: loopback by default, a bearer token when
    set, GET only; /health and /ready stay open for probes. Over real HTTP."""
    from bot.cli import build_parser
    from bot.config import config_from_args

    args = build_parser().parse_args(["join", "--hoovik", "http://h:1", "--meeting", "ABC"])
    assert config_from_args(args).server.http_host == "127.0.0.1"  # no --http-host: this host only
    cfg = BotConfig()
    cfg.server.http_port = 0
    svc = BotService(cfg, telemetry_token="s3cret")
    try:
        port = await svc.start_http()
        assert svc._runner is not None
        assert {addr[0] for addr in svc._runner.addresses} == {"127.0.0.1"}
        url = f"http://127.0.0.1:{port}"
        good = {"Authorization": "Bearer s3cret"}
        async with aiohttp.ClientSession() as http:
            for path, status in (("/health", 200), ("/ready", 503)):
                async with http.get(url + path) as resp:
                    assert resp.status == status, path
            for path in ("/stats", "/stats/json", "/metrics"):
                for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
                    async with http.get(url + path, headers=headers) as resp:
                        assert resp.status == 401, (path, headers)
                        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
                        assert "participants" not in await resp.text()
                async with http.get(url + path, headers=good) as resp:
                    assert resp.status == 200, path
            for path in ("/health", "/ready", "/stats", "/stats/json", "/metrics"):
                for method in ("POST", "PUT", "DELETE", "PATCH"):
                    async with http.request(method, url + path, headers=good) as resp:
                        assert resp.status == 405, (method, path)
    finally:
        await svc.stop()
    # Without a token the endpoints are open (on loopback), as before.
    open_svc = BotService(cfg)
    try:
        port = await open_svc.start_http()
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/stats/json") as resp:
            assert resp.status == 200
    finally:
        await open_svc.stop()
