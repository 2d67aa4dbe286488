"""Container audio with any channel count and rate: decoded to 16 kHz mono, never a crash.

The probe: one 8.6 KB 8-channel (7.1) WAV or FLAC ``audio_chunk`` segfaulted the bot (PyAV's
``to_ndarray`` on planar audio with more than 6 channels). These tests decode 1..8 channels at odd
rates, through the pure decoder, a real Socket.IO endpoint and the real engine; a crash would take
the test process down with it.
"""

from __future__ import annotations

import asyncio
import io
import struct
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from hoovik_browser import wait_until
from test_uploads import client, endpoint, jpeg, speech_16k  # noqa: F401  (fixtures)

from bot.config import BotConfig
from bot.runtime import Runtime
from bot.service import BotService
from bot.uploads.access import EmotionServiceOptions
from bot.uploads.codecs import MAX_AUDIO_CHANNELS, decode_audio, resample_linear

RATES = (8000, 11025, 22050, 44100, 48000, 96000)
LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
CODECS = {"wav": "pcm_s16le", "flac": "flac"}


def channel_data(channels: int, rate: int, seconds: float = 0.1) -> np.ndarray:
    """(channels, n) float signals, a different tone and gain per channel, within ±0.3."""
    t = np.arange(int(rate * seconds)) / rate
    return np.stack([(0.3 - 0.02 * c) * np.sin(2 * np.pi * (200 + 50 * c) * t) for c in range(channels)])


def encode(fmt: str, data: np.ndarray, rate: int) -> bytes:
    """A WAV or FLAC chunk written with PyAV (WAV_FORMAT_EXTENSIBLE with a channel mask for > 2)."""
    channels = data.shape[0]
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=fmt) as out:
        stream = out.add_stream(CODECS[fmt], rate=rate, layout=LAYOUTS[channels])
        frame = av.AudioFrame.from_ndarray(
            np.round(data.T.reshape(1, -1) * 32767).astype(np.int16), format="s16", layout=LAYOUTS[channels]
        )
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def plain_wav(data: np.ndarray, rate: int) -> bytes:
    """A minimal PCM WAV (format tag 1, no channel mask: FFmpeg sees "N channels", no layout)."""
    channels = data.shape[0]
    pcm = np.round(data.T * 32767).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * 2, channels * 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(pcm)) + pcm
    return b"RIFF" + struct.pack("<I", len(body)) + body


def expected_mono(data: np.ndarray, rate: int) -> np.ndarray:
    """The original's rule on the int16-quantised input: channel mean, then linear interpolation."""
    quantised = np.round(data * 32767).astype(np.int16).astype(np.float32) / 32768.0
    return resample_linear(quantised.mean(axis=0), rate)


# --- the decoder --------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["wav", "flac"])
@pytest.mark.parametrize("channels", range(1, 9))
def test_container_audio_any_channel_count_and_rate_is_the_channel_mean(fmt: str, channels: int) -> None:
    for rate in RATES:
        data = channel_data(channels, rate)
        raw = encode(fmt, data, rate)
        pcm = decode_audio(raw)
        assert pcm is not None, (fmt, channels, rate)
        assert pcm.dtype == np.float32 and abs(pcm.size - 1600) <= 1, (fmt, channels, rate, pcm.size)
        want = expected_mono(data, rate)
        n = min(pcm.size, want.size)
        # The channel mean (a swresample "mono" downmix would sum: peaks far above the inputs').
        np.testing.assert_allclose(pcm[:n], want[:n], atol=2e-3, err_msg=f"{fmt} {channels} ch {rate} Hz")


def test_unspecified_layouts_up_to_the_resampler_limit_and_refusals_beyond() -> None:
    for channels in (3, 7, 8, 9, 16, MAX_AUDIO_CHANNELS):
        data = channel_data(channels, 44100)
        pcm = decode_audio(plain_wav(data, 44100))
        assert pcm is not None and abs(pcm.size - 1600) <= 1, channels
        np.testing.assert_allclose(pcm, expected_mono(data, 44100)[: pcm.size], atol=2e-3)
    assert decode_audio(plain_wav(channel_data(MAX_AUDIO_CHANNELS + 1, 16000), 16000)) is None
    eight = encode("wav", channel_data(8, 48000), 48000)
    for bad in (b"RIFF" + b"\0" * 100, b"fLaC" + b"\xff" * 64, eight[:40], b"OggS" + eight[4:200], b"FORM1234"):
        assert decode_audio(bad) is None  # a malformed container is not mistaken for raw float32
    # A truncated chunk keeps what decodes.
    assert decode_audio(eight[:2000]) is not None


# --- through the endpoint -----------------------------------------------------------------------


async def test_multichannel_chunks_through_the_endpoint_and_malformed_ones_harm_nothing(
    endpoint: Any,  # noqa: F811
) -> None:
    service, url, engine, clock = await endpoint()
    a, b = await client(url, "u-multi"), await client(url, "u-other")
    try:
        sent = 0
        for fmt in ("wav", "flac"):
            for channels in range(1, 9):
                rate = RATES[(channels + (fmt == "flac")) % len(RATES)]
                await a.emit("audio_chunk", {"buffer": encode(fmt, channel_data(channels, rate), rate)})
                sent += 1
                await wait_until(lambda n=sent: len(engine.of("audio", "u-multi")) == n, f"chunk {sent} fed")
                clock.now += 0.1
        assert all(abs(c[2].size - 1600) <= 1 and c[2].dtype == np.float32 for c in engine.of("audio", "u-multi"))
        # Malformed containers: an error to the sender, nothing fed; the next chunk and others go on.
        malformed = [b"RIFF" + b"\0" * 60, b"fLaC" + b"\xff" * 64, plain_wav(channel_data(65, 16000), 16000)]
        for raw in malformed:
            await a.emit("audio_chunk", raw)
        await wait_until(lambda: len(a.errors) == 3, "three errors", info=lambda: service.counters)
        assert a.errors == [{"code": "AUDIO_UNDECODABLE", "maxBytes": 2097152, "reason": "undecodable"}] * 3
        await a.emit("audio_chunk", encode("flac", channel_data(8, 96000), 96000))
        await b.emit("audio_chunk", encode("wav", channel_data(8, 11025), 11025))
        await wait_until(
            lambda: len(engine.of("audio", "u-multi")) == sent + 1 and engine.of("audio", "u-other"), "still decoding"
        )
        assert b.errors == [] and service.counters["audio_undecodable"] == 3
    finally:
        await a.close()
        await b.close()


# --- the real engine ----------------------------------------------------------------------------


async def test_eight_channel_uploads_produce_results_with_the_real_engine(
    hoovik_bot_config: BotConfig,
    hoovik_runtime: Runtime,
    media_dir: Path,
    jpeg: bytes,  # noqa: F811
) -> None:
    """7.1 WAV chunks at 44.1 kHz (the probe's crash) and JPEG frames in, results out."""
    service = BotService(hoovik_bot_config, emotion_service=EmotionServiceOptions())
    await service.start_http()
    await service.load(hoovik_runtime)
    ui = await client(f"http://127.0.0.1:{service.http_port}", "u-71")
    speech = resample_linear(speech_16k(media_dir / "ravdess" / "audio" / "03-01-03-01-01-01-02.wav"), 16000, 44100)
    step = 4410
    try:

        async def stream() -> None:
            start = time.monotonic()
            for k in range(10**6):
                if any(m["result"]["modality"] in ("both", "audio_only") for m in ui.messages()):
                    return
                i = (k * step) % (speech.size - step)
                chunk = np.stack([speech[i : i + step] * (1.0 - 0.05 * c) for c in range(8)])
                await ui.emit("audio_chunk", encode("wav", chunk, 44100))
                if k % 2 == 0:
                    await ui.emit("emotion.frame", jpeg)
                await asyncio.sleep(max(0.0, start + (k + 1) * 0.1 - time.monotonic()))

        await asyncio.wait_for(stream(), 30)
        assert service.emotion is not None and service.emotion.counters.get("audio_undecodable") is None
        assert service.emotion.counters["audio_chunks"] > 0
    finally:
        await ui.close()
        await service.stop()
