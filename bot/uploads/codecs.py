"""Payloads and decoders of the emotion-service uploads (docs/hoovik.md, "The emotion-service endpoint"): bytes in,
16 kHz mono / RGB out.

Everything here is pure and thread-safe: the endpoint runs container-audio and image decoding in
worker threads. Decoders never raise on bad input; they return ``None``.

Audio containers are decoded with PyAV and converted to *packed* float32 at the stream's own rate
and channel count; the channel mean is then taken in numpy and the rate changed by linear
interpolation (the original's rule, docs/hoovik.md, "The emotion-service endpoint"). Two PyAV paths are
deliberately avoided, because
the probe found them unsafe with the PyAV/FFmpeg in this venv:

* ``AudioFrame.to_ndarray()`` on *planar* audio with 8 channels (7.1) crashes the process
  (segfault); a packed frame has one plane whatever the channel count, and it is read with an
  explicit element count.
* ``AudioResampler(layout="mono")`` does not take the mean: it sums unspecified layouts (peaks
  above 1.0 from a 0.3-amplitude 8-channel WAV) and fails for 9 channels.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

import av
import numpy as np
from PIL import Image

from models.constants import SAMPLE_RATE

MAX_FRAME_BYTES = 4 * 1024 * 1024
MAX_AUDIO_BYTES = 2 * 1024 * 1024
MAX_IMAGE_PIXELS = 4096 * 4096
MAX_DECODED_AUDIO_S = 30.0
# FFmpeg's resampler handles at most 64 channels (SWR_CH_MAX); more is refused before decoding.
MAX_AUDIO_CHANNELS = 64
MIN_AUDIO_RATE = 1000
MAX_AUDIO_RATE = 384_000
PAYLOAD_KEYS = ("buffer", "data", "payload", "chunk")
# libsndfile's containers the original decoded (WAV/RF64, FLAC, OGG, AIFF, CAF); anything else that
# is a multiple of 4 bytes is raw little-endian float32, as the browser's AudioWorklet sends it.
AUDIO_MAGIC = (b"RIFF", b"RIFX", b"RF64", b"fLaC", b"OggS", b"FORM", b"caff")


def to_bytes(value: Any) -> bytes:
    """bytes / bytearray / memoryview, a base64 string (a ``data:`` URL prefix is tolerated) or a
    list of ints → bytes. Raises ``TypeError``/``ValueError`` for anything else."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        text = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
        try:
            return base64.b64decode(text)
        except (binascii.Error, ValueError):
            return value.encode("latin-1")  # the original's fallback; raises on non-latin-1 text
    if isinstance(value, list):
        return bytes(value)
    raise TypeError(f"cannot read {type(value).__name__} as bytes")


def payload_bytes(data: Any) -> bytes | None:
    """The media bytes of an ``audio_chunk`` / ``emotion.frame`` payload, ``None`` if unusable.

    Shapes (docs/hoovik.md, "The emotion-service endpoint"): raw bytes, a base64 string, a list of ints, or a dict
    whose first present key
    of ``buffer``/``data``/``payload``/``chunk`` holds one of those. A participant id inside the dict
    is ignored: the socket's identity was fixed at connect.
    """
    if isinstance(data, dict):
        for key in PAYLOAD_KEYS:
            if data.get(key) is not None:
                data = data[key]
                break
        else:
            return None
        if isinstance(data, dict):
            return None
    try:
        return to_bytes(data)
    except (TypeError, ValueError):
        return None


def is_container(raw: bytes) -> bool:
    """Whether ``raw`` starts like one of the audio containers (decoded in a worker thread)."""
    return raw[:4] in AUDIO_MAGIC


def decode_audio(raw: bytes) -> np.ndarray | None:
    """Audio bytes → float32 mono at 16 kHz, or ``None`` when they are neither a decodable container
    nor raw float32. Non-finite samples become 0 so that one bad chunk cannot poison the Wav2Vec2
    window. A container that fails to decode is *not* retried as float32: it is reported as
    undecodable."""
    if is_container(raw):
        pcm = decode_container_audio(raw)
    elif raw and len(raw) % 4 == 0:
        pcm = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    else:
        pcm = None
    if pcm is None or pcm.size == 0:
        return None
    if not np.all(np.isfinite(pcm)):
        pcm = np.nan_to_num(pcm, nan=0.0, posinf=0.0, neginf=0.0)
    return pcm


def decode_container_audio(raw: bytes) -> np.ndarray | None:
    """A WAV/FLAC/OGG/AIFF/CAF chunk with any channel count (1..64) and rate → 16 kHz mono float32.

    Never raises: anything FFmpeg or PyAV rejects, more than 64 channels, or a rate outside
    1 kHz..384 kHz gives ``None``. At most 30 s of the chunk is decoded.
    """
    try:
        mono, rate = _decode_mono(raw)
    except Exception:  # any decoder failure is a bad upload, never the endpoint's failure
        return None
    if mono is None or mono.size == 0:
        return None
    return resample_linear(mono, rate, SAMPLE_RATE)


def _decode_mono(raw: bytes) -> tuple[np.ndarray | None, int]:
    with av.open(io.BytesIO(raw), mode="r") as container:
        if not container.streams.audio:
            return None, 0
        stream = container.streams.audio[0]
        ctx = stream.codec_context
        rate = int(ctx.sample_rate or stream.rate or 0)
        channels = len(ctx.layout.channels) if ctx.layout is not None else 0
        if not MIN_AUDIO_RATE <= rate <= MAX_AUDIO_RATE or not 1 <= channels <= MAX_AUDIO_CHANNELS:
            return None, 0
        limit = int(MAX_DECODED_AUDIO_S * rate)
        # Packed float32, same rate and layout: only a sample-format conversion, done in C.
        resampler = av.AudioResampler(format="flt")
        chunks: list[np.ndarray] = []
        total = 0
        for frame in container.decode(stream):
            if frame.sample_rate != rate:
                return None, 0  # a rate change inside one chunk: not worth supporting
            for out in resampler.resample(frame):
                total += _append_mean(out, chunks)
            if total >= limit:
                break
        else:
            for out in resampler.resample(None):
                total += _append_mean(out, chunks)
    if not chunks:
        return None, rate
    return np.concatenate(chunks)[:limit], rate


def _append_mean(frame: av.AudioFrame, chunks: list[np.ndarray]) -> int:
    """Append the channel mean of a packed float32 frame; returns its sample count."""
    n = int(frame.samples)
    channels = len(frame.layout.channels)
    if n <= 0 or channels <= 0:
        return 0
    if frame.format.name != "flt" or len(frame.planes) != 1:
        raise ValueError(f"expected packed float32, got {frame.format.name} with {len(frame.planes)} planes")
    data = np.frombuffer(memoryview(frame.planes[0]), dtype=np.float32, count=n * channels)
    chunks.append(data.reshape(n, channels).mean(axis=1, dtype=np.float32))
    return n


def resample_linear(audio: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Linear-interpolation resampling, as the original did (``np.interp`` over the sample index)."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if rate == target or audio.size == 0:
        return audio
    n = int(audio.size * target / rate)
    if n <= 0:
        return np.zeros(0, dtype=np.float32)
    return np.interp(np.linspace(0, audio.size - 1, n), np.arange(audio.size), audio).astype(np.float32)


def decode_image(raw: bytes) -> np.ndarray | None:
    """JPEG/PNG/WebP bytes → RGB uint8 array, or ``None`` if undecodable or larger than 16 MP."""
    try:
        with Image.open(io.BytesIO(raw)) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                return None
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
