"""The load generator: send-time bookkeeping, encode-once media, and a short run against a real bot.

The run puts a signaling server, the bot service (golden bundle, MediaPipe, tiny Wav2Vec2, Silero
VAD) and two load-generator participants in this process, over loopback ICE, for a few seconds:
what is checked is that results come back on the data channels and that the summary maps them to
send times (end-to-end latency), reads the bot's /stats/json and samples its CPU and RSS.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import av
import numpy as np
import psutil
import pytest

from bot.config import BotConfig
from bot.contrib.clips import AUDIO_RATE, load_clip
from bot.contrib.loadgen import LoadgenOptions, run_loadgen
from bot.contrib.loadgen_media import AUDIO_FRAME, Sender, SendLog, encode_opus, encode_vp8, find_media
from bot.contrib.loadgen_summary import BotTree, format_summary
from bot.runtime import Runtime
from bot.service import BotService
from bot.webrtc.ice import use_loopback_ice
from models.audio import AudioEmbedder
from models.bundle import load_bundle
from models.predictor import Predictor
from signaling.client import SignalingClient, create_room, mint_invite
from signaling.server import SignalingServer


def test_send_log_maps_media_times_to_send_times() -> None:
    video = SendLog(1 / 15, end_stamped=False, maxlen=4)
    audio = SendLog(0.02, end_stamped=True, maxlen=100)
    for k in range(6):
        video.record(k, 100.0 + k / 15)
    for k in range(50):
        audio.record(k, 200.0 + k * 0.02)
    assert len(video) == 4  # bounded: the oldest went
    assert video.lookup(0.0) is None
    assert video.lookup(round(5 / 15, 4)) == pytest.approx(100.0 + 5 / 15)
    assert video.lookup(0.31) is None  # not on the video frame grid
    # The bot stamps an audio frame with its end: frame 9 covers [0.18, 0.20).
    assert audio.lookup(0.2) == pytest.approx(200.0 + 9 * 0.02)


def test_clips_are_encoded_once_into_decodable_packets(media_dir: Path) -> None:
    clip = load_clip(media_dir / "crema-d" / "1001_DFA_ANG_XX.flv", width=320, height=240, max_s=1.0)
    packets = encode_vp8(clip.video, clip.fps)
    assert len(packets) == len(clip.video)
    decoder = av.CodecContext.create("libvpx", "r")
    frames = [f for p in packets for f in decoder.decode(av.Packet(p))]
    assert len(frames) == len(packets) and (frames[0].width, frames[0].height) == (320, 240)
    assert clip.audio is not None
    speech = encode_opus(clip.audio)
    assert len(speech) == len(clip.audio) // AUDIO_FRAME
    opus = av.CodecContext.create("libopus", "r")
    opus.sample_rate, opus.layout, opus.format = AUDIO_RATE, "stereo", "s16"
    pcm = np.concatenate([f.to_ndarray().reshape(-1) for p in speech for f in opus.decode(av.Packet(p))])
    assert np.abs(pcm).max() > 1000  # speech, not silence
    silence = encode_opus(None, 10)
    assert len(silence) == 10


def test_find_media_defaults_to_the_shared_clips(media_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no --media, loadgen and demo find the shared clips: via $HOOVIK_SHARED, and without it
    beside the checkout (the folder the tests' media_dir comes from when the variable is unset)."""
    from bot.contrib.demo import default_media

    found = find_media([str(media_dir / "crema-d"), str(media_dir / "ravdess")])
    assert {p.suffix for p in found} <= {".flv", ".mp4"} and len(found) >= 3
    monkeypatch.setenv("HOOVIK_SHARED", str(media_dir.parent))
    assert set(find_media([])) == set(found) and len(default_media()) == 3
    if media_dir.parent.resolve() == (Path(__file__).resolve().parents[3].parent / "shared").resolve():
        monkeypatch.delenv("HOOVIK_SHARED")
        assert {p.resolve() for p in find_media([])} == {p.resolve() for p in found}
        assert all(p.is_relative_to(media_dir.resolve()) for p in (q.resolve() for q in default_media()))


@pytest.fixture
async def bot(
    golden_bundle_dir: Path, tiny_wav2vec2_dir: Path, face_asset: Path
) -> AsyncIterator[tuple[str, str, str, BotService]]:
    use_loopback_ice()
    bundle = load_bundle(golden_bundle_dir)
    embedder = AudioEmbedder(str(tiny_wav2vec2_dir))
    runtime = Runtime(bundle, Predictor(bundle, torch_threads=1), embedder, face_asset, "tiny", False)
    server = SignalingServer(secrets.token_bytes(32))
    await server.start("127.0.0.1", 0)
    service = BotService(BotConfig())
    await service.start_http()
    await service.load(runtime)
    room, host_token = await create_room(server.url, "loadgen")
    token = await mint_invite(server.url, room, host_token, "bot")
    session = await SignalingClient.connect(server.ws_url, room, token, "bot", "Hoovik Bot", "bot")
    task = asyncio.create_task(service.run_session(session))
    try:
        yield server.url, room, host_token, service
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await service.stop()
        await server.stop()


@pytest.mark.parametrize("sender", ["preencoded", "live"])
async def test_a_short_run_measures_rates_latency_and_the_bot(
    bot: tuple[str, str, str, BotService], media_dir: Path, tmp_path: Path, sender: Sender
) -> None:
    url, room, host_token, service = bot
    out = io.StringIO()
    opts = LoadgenOptions(
        signaling=url,
        room=room,
        host_token=host_token,
        participants=2,
        speaking=1,
        duration=4.0,
        warmup=2.0,
        media=[str(media_dir / "crema-d")],
        width=320,
        height=240,
        bot_stats=f"http://127.0.0.1:{service.http_port}/stats/json",  # the pid is discovered from it
        json_path=str(tmp_path / "summary.json"),
        quiet=True,
        sender=sender,
        join_interval=0.2,
    )
    summary = await run_loadgen(opts, out)
    assert json.loads((tmp_path / "summary.json").read_text())["options"]["participants"] == 2
    rows = {r["participantId"]: r for r in summary["participants"]}
    assert set(rows) == {"p01", "p02"} and rows["p01"]["speaking"] and not rows["p02"]["speaking"]
    for row in rows.values():
        assert row["results"] >= 5, summary
        assert row["e2eMs"]["n"] >= 5 and row["e2eMs"]["p50"] >= row["botSideMs"]["p50"] - 1.0
    # Every result maps back to the frame's send time, and that frame was sent before the bot got it.
    assert summary["unmappedResults"] == 0
    assert summary["transportMs"]["p50"] >= -1.0
    # The silent participant's audio is gated (digital silence or VAD); its results use the face.
    assert set(rows["p02"]["profiles"]) == {"video_only"}
    res = summary["resources"]
    assert res["botRssMiB"]["start"] > 0 and "botCpuPercent" in res
    bot_stats = summary["bot"]
    assert bot_stats["pools"]["inference"]["batchSizes"] and "fps" in bot_stats["throttle"]
    text = format_summary(summary)
    assert "p01" in text and "e2e p50" in text
    assert os.getpid() == (service.telemetry.stats()["process"]["pid"])


def test_the_bots_cpu_and_memory_include_its_child_processes() -> None:
    # The predictor runs in a child of the bot (bot.pipeline.remote): the bench's "bot CPU" and
    # "RSS flat" must see it, not count it under "other processes".
    me = psutil.Process()
    tree = BotTree(me)
    busy = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 3\nwhile time.time() < end: pass"])
    try:
        time.sleep(0.3)
        tree.sample()  # the child is seen here; it counts from the next sample on
        time.sleep(1.0)
        cpu, rss = tree.sample()
        assert busy.pid in tree.procs
        assert cpu is not None and cpu >= 50.0  # the child alone spins a whole core
        assert rss is not None and rss > me.memory_info().rss
    finally:
        busy.kill()
        busy.wait()
    tree.sample()
    assert busy.pid not in tree.procs  # an exited child is dropped, the bot still measured
    assert BotTree(None).sample() == (None, None)
