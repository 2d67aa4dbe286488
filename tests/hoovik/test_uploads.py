"""The emotion-service endpoint in upload mode: the original's payloads, limits, gate and events.

Most tests use a recording stand-in for the engine and an injected clock, so the contract is checked
deterministically; one test runs the real engine end to end.
"""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import av
import numpy as np
import pytest
import pytest_asyncio
import socketio
from aiohttp import web
from hoovik_browser import HostUI, wait_until

from bot.config import BotConfig
from bot.pipeline.results import EmotionResult
from bot.runtime import Runtime
from bot.service import BotService
from bot.uploads.access import EmotionServiceOptions
from bot.uploads.codecs import MAX_AUDIO_BYTES, MAX_FRAME_BYTES, decode_audio, decode_image, payload_bytes
from bot.uploads.endpoint import EmotionService


class StubEngine:
    """Records what the endpoint feeds the engine."""

    def __init__(self) -> None:
        self.participants: dict[str, Any] = {}
        self.calls: list[tuple[Any, ...]] = []
        self.face_pool = SimpleNamespace(depth=0)

    def add_participant(
        self, pid: str, name: str = "", role: str = "participant", mic: bool = True, camera: bool = True
    ) -> None:
        self.participants[pid] = SimpleNamespace(mic_on=mic, camera_on=camera)
        self.calls.append(("add", pid, mic, camera))

    def remove_participant(self, pid: str) -> None:
        self.participants.pop(pid, None)
        self.calls.append(("remove", pid))

    def set_media(self, pid: str, mic: bool | None = None, camera: bool | None = None) -> None:
        self.calls.append(("media", pid, mic, camera))

    def on_audio(self, pid: str, samples: np.ndarray, media_time: float) -> None:
        self.calls.append(("audio", pid, samples, media_time))

    def on_video_frame(self, pid: str, frame: Any, media_time: float) -> None:
        self.calls.append(("frame", pid, frame, media_time))

    def of(self, kind: str, pid: str | None = None) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] == kind and (pid is None or c[1] == pid)]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


Endpoint = tuple[EmotionService, str, StubEngine, Clock]


@pytest_asyncio.fixture
async def endpoint() -> AsyncIterator[Callable[..., Awaitable[Endpoint]]]:
    runners: list[web.AppRunner] = []
    services: list[EmotionService] = []

    async def make(
        options: EmotionServiceOptions | None = None, meeting: Callable[[str], bool] = lambda pid: False
    ) -> Endpoint:
        clock = Clock()
        engine = StubEngine()
        service = EmotionService(
            options,
            clock=clock,
            engine=lambda: engine,  # type: ignore[arg-type,return-value]
            is_meeting_participant=meeting,
        )
        app = web.Application()
        service.attach(app)
        runner = web.AppRunner(app, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        services.append(service)
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return service, f"http://127.0.0.1:{port}", engine, clock

    try:
        yield make
    finally:
        for service in services:
            await service.close()
        for runner in runners:
            await runner.cleanup()


@pytest.fixture(scope="module")
def jpeg(media_dir: Path) -> bytes:
    return (media_dir / "photos" / "1.jpg").read_bytes()


def wav_bytes(samples: np.ndarray, rate: int, channels: int = 1) -> bytes:
    """int16 WAV written with PyAV, as a client would upload it."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=rate, layout="mono" if channels == 1 else "stereo")
        data = np.repeat(samples[None, :], channels, axis=0) if channels > 1 else samples[None, :]
        frame = av.AudioFrame.from_ndarray(
            (data.T.reshape(1, -1) * 32767).astype(np.int16), format="s16", layout=stream.layout.name
        )
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


async def client(url: str, pid: str, **kwargs: Any) -> HostUI:
    ui = HostUI(url, pid, **kwargs)
    await ui.connect()
    return ui


# --- pure helpers -------------------------------------------------------------------------------


def test_payload_shapes_and_decoding(jpeg: bytes) -> None:
    pcm = np.linspace(-0.5, 0.5, 1600, dtype=np.float32)
    raw = pcm.tobytes()
    b64 = base64.b64encode(raw).decode()
    for shape in (
        raw,
        bytearray(raw),
        b64,
        list(raw),
        {"participantId": "ignored", "buffer": raw},
        {"data": b64},
        {"payload": list(raw)},
        {"chunk": raw},
    ):
        assert payload_bytes(shape) == raw, type(shape)
    assert payload_bytes({"nothing": 1}) is None
    assert payload_bytes(12) is None
    assert payload_bytes([300]) is None  # not bytes
    np.testing.assert_array_equal(decode_audio(raw), pcm)
    assert decode_audio(b"\x01\x02\x03") is None  # neither a container nor float32
    nan = np.array([0.1, np.nan, np.inf, -0.1], dtype="<f4").tobytes()
    np.testing.assert_array_equal(decode_audio(nan), np.array([0.1, 0.0, 0.0, -0.1], dtype=np.float32))
    # A 48 kHz stereo WAV: down-mixed and resampled to 16 kHz.
    t = np.arange(4800) / 48000
    wav = decode_audio(wav_bytes(0.5 * np.sin(2 * np.pi * 440 * t), 48000, channels=2))
    assert wav is not None and wav.dtype == np.float32 and abs(wav.size - 1600) <= 1
    assert 0.4 < float(np.abs(wav).max()) <= 0.51
    rgb = decode_image(jpeg)
    assert rgb is not None and rgb.dtype == np.uint8 and rgb.shape == (360, 540, 3)
    assert decode_image(b"not an image") is None


# --- the protocol over Socket.IO ----------------------------------------------------------------


async def test_status_ping_and_audio_variants(endpoint: Any) -> None:
    service, url, engine, clock = await endpoint()
    ui = await client(url, "u-alice")
    try:
        await wait_until(lambda: ui.status, "server.status")
        status = ui.status[0]
        assert set(status) == {
            "status",
            "participantId",
            "device",
            "seqLen",
            "targetFps",
            "modalityStaleSec",
            "modalities",
            "ts",
        }
        assert status["participantId"] == "u-alice" and status["targetFps"] == 5 and status["seqLen"] == 10
        await ui.emit("ping")
        await wait_until(lambda: ui.pongs, "pong")
        assert isinstance(ui.pongs[0]["ts"], int)

        pcm = np.linspace(-0.5, 0.5, 1600, dtype=np.float32)
        raw = pcm.tobytes()
        sent = [raw, base64.b64encode(raw).decode(), list(raw), {"participantId": "u-alice", "buffer": raw}]
        t = np.arange(4800) / 48000
        sent.append({"data": wav_bytes(0.3 * np.sin(2 * np.pi * 300 * t), 48000)})
        for n, payload in enumerate(sent, 1):
            await ui.emit("audio_chunk", payload)
            await wait_until(lambda n=n: len(engine.of("audio")) == n, f"chunk {n} fed", info=lambda: service.counters)
            clock.now += 0.1  # one 100 ms chunk per 100 ms
        chunks = engine.of("audio", "u-alice")
        for call in chunks[:4]:
            np.testing.assert_array_equal(call[2], pcm)
        assert abs(chunks[4][2].size - 1600) <= 1
        # One clock from the first upload; audio advances by the samples received.
        assert [round(c[3], 3) for c in chunks] == [0.0, 0.1, 0.2, 0.3, 0.4]
        assert engine.of("add") == [("add", "u-alice", True, True)]
    finally:
        await ui.close()
    await wait_until(lambda: engine.of("remove"), "state freed with the last socket")
    assert engine.of("remove") == [("remove", "u-alice")]
    assert "u-alice" not in service.uploads


async def test_limits_and_error_codes(endpoint: Any, jpeg: bytes) -> None:
    service, url, engine, _ = await endpoint()
    ui = await client(url, "u-bob")
    try:
        await ui.emit("audio_chunk", b"\0" * (MAX_AUDIO_BYTES + 4))
        await ui.emit("audio_chunk", b"")
        await ui.emit("emotion.frame", {"buffer": b"\xff" * (MAX_FRAME_BYTES + 1)})
        await ui.emit("frame", b"")
        await wait_until(lambda: len(ui.errors) == 4, "four errors")
        assert ui.errors == [
            {"code": "AUDIO_TOO_LARGE", "maxBytes": 2097152, "reason": "too_large"},
            {"code": "AUDIO_TOO_LARGE", "maxBytes": 2097152, "reason": "empty"},
            {"code": "FRAME_TOO_LARGE", "maxBytes": 4194304, "reason": "too_large"},
            {"code": "FRAME_TOO_LARGE", "maxBytes": 4194304, "reason": "empty"},
        ]
        # Just inside the limits is fine; undecodable payloads are answered (the original dropped them
        # silently) and harm nothing else.
        await ui.emit("audio_chunk", b"\0" * MAX_AUDIO_BYTES)
        await ui.emit("audio_chunk", b"\x01\x02\x03")
        await ui.emit("emotion.frame", b"garbage that is not an image")
        await wait_until(
            lambda: (
                engine.of("audio")
                and service.counters.get("frames_undecodable")
                and service.counters.get("audio_undecodable")
            ),
            "processed",
            info=lambda: service.counters,
        )
        await wait_until(lambda: len(ui.errors) == 6, "two more errors")
        assert sorted(e["code"] for e in ui.errors[4:]) == ["AUDIO_UNDECODABLE", "FRAME_UNDECODABLE"]
        assert all(e["reason"] == "undecodable" for e in ui.errors[4:])
        assert engine.of("frame") == []
    finally:
        await ui.close()


async def test_frames_gate_no_backpressure_av_chunk_and_media_state(endpoint: Any, jpeg: bytes) -> None:
    service, url, engine, clock = await endpoint()
    ui = await client(url, "u-carol")
    try:
        await ui.emit("emotion.frame", {"meetingId": "ROOM1", "participantId": "u-carol", "buffer": jpeg})
        await wait_until(lambda: len(engine.of("frame")) == 1, "first frame")
        frame = engine.of("frame")[0][2]
        assert isinstance(frame, np.ndarray) and frame.shape == (360, 540, 3) and frame.dtype == np.uint8
        # Frame gate: a 5 fps token bucket with a burst of 3, before any decode.
        await ui.emit("frame", base64.b64encode(jpeg).decode())  # the alias, base64: the burst
        await ui.emit("frame", jpeg)
        await wait_until(lambda: len(engine.of("frame")) == 3, "the burst")
        clock.now += 0.1
        await ui.emit("frame", base64.b64encode(jpeg).decode())
        await wait_until(lambda: service.counters.get("frames_gated") == 1, "gated")
        clock.now += 0.1
        await ui.emit("frame", jpeg)
        await wait_until(lambda: len(engine.of("frame")) == 4, "fourth frame")
        # No backpressure, however deep the engine's face queue (docs/hoovik.md): the bot throttles
        # its own sampling instead.
        engine.face_pool.depth = 50
        service._decoding = 7  # busy decoders do not make backpressure either
        clock.now += 0.25
        await ui.emit("emotion.frame", jpeg)
        await wait_until(lambda: len(engine.of("frame")) == 5, "fifth frame")
        await ui.emit("ping")
        await wait_until(lambda: ui.pongs, "pong after the frame")
        assert ui.backpressure == [] and "backpressure" not in service.counters
        engine.face_pool.depth, service._decoding = 0, 0
        # av_chunk carries both.
        clock.now += 0.25
        pcm = np.zeros(1600, dtype=np.float32) + 0.01
        await ui.emit(
            "av_chunk", {"participantId": "u-carol", "video": base64.b64encode(jpeg).decode(), "audio": pcm.tobytes()}
        )
        await wait_until(lambda: len(engine.of("frame")) == 6 and engine.of("audio"), "av_chunk parts")
        # Media state: mic off stops audio at once; camera off stops frames; a claimed id is honoured.
        await ui.emit(
            "participant.media_state", {"participantId": "u-carol", "micEnabled": False, "cameraEnabled": True}
        )
        await wait_until(lambda: engine.of("media"), "media state")
        assert engine.of("media")[-1] == ("media", "u-carol", False, True)
        n_audio = len(engine.of("audio"))
        await ui.emit("audio_chunk", pcm.tobytes())
        await wait_until(lambda: service.counters.get("audio_mic_off") == 1, "audio dropped")
        assert len(engine.of("audio")) == n_audio
        await ui.emit(
            "participant.media_state", {"participantId": "someone-else", "micEnabled": False, "cameraEnabled": False}
        )
        await wait_until(lambda: "someone-else" in service.uploads, "relay path")
        assert service.uploads["someone-else"].camera is False
        assert service.uploads["u-carol"].camera is True
    finally:
        await ui.close()


async def test_results_go_to_every_socket_of_the_pid_and_meeting_pids_ignore_uploads(
    endpoint: Any, jpeg: bytes
) -> None:
    service, url, engine, _ = await endpoint(meeting=lambda pid: pid == "u-meeting")
    a1, a2, b = await client(url, "u-a"), await client(url, "u-a"), await client(url, "u-b")
    meeting = await client(url, "u-meeting")
    try:
        result = EmotionResult(
            participant_id="socket-id-1",
            seq=7,
            emotion="happy",
            confidence=0.81234,
            probs=(0.01, 0.02, 0.03, 0.8, 0.04, 0.1),
            modality="both",
            anomaly=False,
            anomaly_score=0.1234567,
            latency_ms=12.345,
            ts_ms=1_700_000_000_000,
            media_time=1.0,
            captured_at_ms=1_699_999_999_990,
            bundle_id="hb-test",
            trained=False,
        )
        service.publish("u-a", result)
        await wait_until(lambda: a1.results and a2.results, "both sockets of u-a")
        msg = a1.messages()[0]
        assert msg == a2.messages()[0]
        assert list(msg)[:4] == ["participantId", "result", "latencyMs", "ts"]
        assert msg["participantId"] == "u-a" and msg["latencyMs"] == 12.35 and msg["ts"] == 1_700_000_000_000
        assert msg["result"] == {
            "emotion": "happy",
            "confidence": 0.8123,
            "probs": {"angry": 0.01, "fearful": 0.02, "disgust": 0.03, "happy": 0.8, "sad": 0.04, "neutral/calm": 0.1},
            "modality": "both",
            "anomaly": False,
            "anomalyScore": 0.123457,
        }
        await asyncio.sleep(0.2)
        assert b.results == []
        # A pid the bot analyses from the meeting: uploads are not fed, media_state does not apply.
        await meeting.emit("audio_chunk", np.zeros(1600, dtype=np.float32).tobytes())
        await meeting.emit("emotion.frame", jpeg)
        await meeting.emit("participant.media_state", {"micEnabled": False, "cameraEnabled": False})
        await wait_until(lambda: service.counters.get("media_state_ignored_meeting") == 1, "handled")
        assert service.counters.get("uploads_superseded") == 2
        assert engine.calls == []
    finally:
        for ui in (a1, a2, b, meeting):
            await ui.close()


async def test_access_options(endpoint: Any) -> None:
    _, url, _, _ = await endpoint(EmotionServiceOptions(token="s3cret"))
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client(url, "u-a")
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client(url, "u-a", auth_extra={"token": "wrong"})
    ok = await client(url, "u-a", auth_extra={"token": "s3cret"})
    await wait_until(lambda: ok.status, "status")
    await ok.close()

    _, url, _, _ = await endpoint(EmotionServiceOptions(allowed_origins=("https://meet.example",)))
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client(url, "u-a", headers={"Origin": "https://evil.example"})
    ok = await client(url, "u-a", headers={"Origin": "https://meet.example"})
    await wait_until(lambda: ok.status, "status")
    await ok.close()

    service, url, engine, _ = await endpoint(EmotionServiceOptions(uploads=False))
    ui = await client(url, "u-a")
    await ui.emit("audio_chunk", np.zeros(1600, dtype=np.float32).tobytes())
    await wait_until(lambda: service.counters.get("uploads_disabled") == 1, "refused")
    assert engine.calls == []
    await ui.close()


# --- the real engine ----------------------------------------------------------------------------


def speech_16k(path: Path) -> np.ndarray:
    chunks = []
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
    return np.concatenate(chunks).astype(np.float32)


@pytest.fixture(scope="module")
def starter_runtime(face_asset: Path) -> Runtime:
    """The shipped starter bundle, as ``hoovik-bot join --hoovik …`` loads it without --bundle."""
    from bot.runtime import build_runtime

    cfg = BotConfig()
    cfg.models.face_asset = str(face_asset)
    return build_runtime(cfg)


@pytest.mark.parametrize("family", ["reference", "starter"])
async def test_uploads_produce_results_with_the_real_engine(
    hoovik_bot_config: BotConfig, request: pytest.FixtureRequest, media_dir: Path, jpeg: bytes, family: str
) -> None:
    """A drop-in client of the original: 100 ms float32 chunks and JPEG frames in, results out."""
    runtime: Runtime = request.getfixturevalue("starter_runtime" if family == "starter" else "hoovik_runtime")
    service = BotService(hoovik_bot_config, emotion_service=EmotionServiceOptions())
    await service.start_http()
    await service.load(runtime)
    url = f"http://127.0.0.1:{service.http_port}"
    ui = await client(url, "u-upload")
    speech = speech_16k(media_dir / "ravdess" / "audio" / "03-01-03-01-01-01-02.wav")
    try:

        async def stream() -> None:
            start = time.monotonic()
            for i in range(0, 10**9, 1600):
                if (
                    ui.results
                    and any(m["result"]["modality"] == "both" for m in ui.messages())
                    and len(ui.results) >= 3
                ):
                    return
                chunk = speech[i % (speech.size - 1600) :][:1600]
                await ui.emit("audio_chunk", chunk.tobytes())  # a bare Float32Array view, as the browser sends
                if (i // 1600) % 2 == 0:
                    await ui.emit("emotion.frame", {"meetingId": "ROOM1", "participantId": "u-upload", "buffer": jpeg})
                # Real-time pacing: one 100 ms chunk per 100 ms.
                await asyncio.sleep(max(0.0, start + (i // 1600 + 1) * 0.1 - time.monotonic()))

        await asyncio.wait_for(stream(), 30)
        for msg in ui.messages():
            assert msg["participantId"] == "u-upload"
            assert set(msg["result"]) == {"emotion", "confidence", "probs", "modality", "anomaly", "anomalyScore"}
        assert any(m["result"]["modality"] == "both" for m in ui.messages())
        if family == "starter":
            assert all(m["trained"] is True and m["bundleId"].startswith("hb-starter-") for m in ui.messages())
        assert "u-upload" in service.engine.participants
        assert service.telemetry.stats()["emotionService"]["uploadParticipants"] == ["u-upload"]
    finally:
        await ui.close()
        await wait_until(lambda: "u-upload" not in service.engine.participants, "freed on disconnect")
        await service.stop()
