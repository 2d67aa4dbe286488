"""The emotion-service upload endpoint: Socket.IO protocol and access (:mod:`bot.uploads.endpoint`),
payload decoding (:mod:`bot.uploads.codecs`), frame gate and media clock (:mod:`bot.uploads.timing`).
"""

from bot.uploads.codecs import (
    MAX_AUDIO_BYTES,
    MAX_FRAME_BYTES,
    decode_audio,
    decode_container_audio,
    decode_image,
    payload_bytes,
    to_bytes,
)
from bot.uploads.endpoint import (
    MAX_HTTP_BUFFER,
    EmotionService,
    EmotionServiceOptions,
    UploadState,
    connection_is_loopback,
)
from bot.uploads.timing import FrameGate, MediaClock

__all__ = [
    "MAX_AUDIO_BYTES",
    "MAX_FRAME_BYTES",
    "MAX_HTTP_BUFFER",
    "EmotionService",
    "EmotionServiceOptions",
    "FrameGate",
    "MediaClock",
    "UploadState",
    "connection_is_loopback",
    "decode_audio",
    "decode_container_audio",
    "decode_image",
    "payload_bytes",
    "to_bytes",
]
