"""The emotion-service endpoint (spec section 2); the code lives in :mod:`bot.uploads`.

Kept so that ``from bot.emotion_service import EmotionService, EmotionServiceOptions, ...`` keeps
working. See :mod:`bot.uploads.endpoint` for the protocol, access rules and upload limits, and
docs/hoovik.md for the differences from the original.
"""

from bot.uploads.codecs import (
    AUDIO_MAGIC,
    MAX_AUDIO_BYTES,
    MAX_DECODED_AUDIO_S,
    MAX_FRAME_BYTES,
    MAX_IMAGE_PIXELS,
    PAYLOAD_KEYS,
    decode_audio,
    decode_container_audio,
    decode_image,
    payload_bytes,
    to_bytes,
)
from bot.uploads.endpoint import (
    MAX_CONCURRENT_DECODES,
    MAX_HTTP_BUFFER,
    MAX_PENDING_EMITS,
    MAX_UPLOAD_STATES,
    MODALITIES,
    PID_KEYS,
    EmotionService,
    EmotionServiceOptions,
    UploadState,
    connection_is_loopback,
)
from bot.uploads.timing import FrameGate, MediaClock

__all__ = [
    "AUDIO_MAGIC",
    "MAX_AUDIO_BYTES",
    "MAX_CONCURRENT_DECODES",
    "MAX_DECODED_AUDIO_S",
    "MAX_FRAME_BYTES",
    "MAX_HTTP_BUFFER",
    "MAX_IMAGE_PIXELS",
    "MAX_PENDING_EMITS",
    "MAX_UPLOAD_STATES",
    "MODALITIES",
    "PAYLOAD_KEYS",
    "PID_KEYS",
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
