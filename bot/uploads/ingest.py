"""Upload ingest of the emotion-service endpoint: ``audio_chunk``, ``emotion.frame`` and ``av_chunk``.

Each upload is checked once against its size limit (:data:`bot.uploads.codecs.MAX_AUDIO_BYTES`,
:data:`~bot.uploads.codecs.MAX_FRAME_BYTES`), admitted (:meth:`EmotionService._upload_state`),
decoded off the loop when it is a container or an image (:mod:`bot.uploads.codecs`), and fed to the
engine with a media time from the pid's :class:`~bot.uploads.timing.MediaClock`.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import socketio

from bot.live.engine import Engine
from bot.uploads.access import MAX_CONCURRENT_DECODES, UploadState
from bot.uploads.codecs import (
    MAX_AUDIO_BYTES,
    MAX_FRAME_BYTES,
    decode_audio,
    decode_image,
    is_container,
    payload_bytes,
)
from models.constants import SAMPLE_RATE


class UploadIngest:
    """The upload handlers of :class:`bot.uploads.endpoint.EmotionService` (which defines the rest)."""

    sio: socketio.AsyncServer
    sid_pid: dict[str, str]
    uploads: OrderedDict[str, UploadState]
    admitted: dict[str, UploadState]
    clock: Callable[[], float]
    _decoding: int

    @property
    def engine(self) -> Engine | None:
        raise NotImplementedError

    def _count(self, key: str) -> None:
        raise NotImplementedError

    async def _upload_state(self, sid: str, pid: str) -> UploadState | None:
        raise NotImplementedError

    # -- uploads ---------------------------------------------------------------------------------

    def _upload(self, sid: str, data: Any) -> tuple[str, bytes] | None:
        """The socket's pid and the payload's bytes, or None (unknown socket, or counted as bad)."""
        pid = self.sid_pid.get(sid)
        if pid is None:
            return None
        raw = self._payload(data)
        return None if raw is None else (pid, raw)

    def _payload(self, data: Any) -> bytes | None:
        raw = payload_bytes(data)
        if raw is None:
            self._count("bad_payloads")
        return raw

    async def _on_audio_chunk(self, sid: str, data: Any = None) -> None:
        upload = self._upload(sid, data)
        if upload is not None:
            await self._push_audio(sid, *upload)

    async def _on_frame(self, sid: str, data: Any = None) -> None:
        upload = self._upload(sid, data)
        if upload is not None:
            await self._push_frame(sid, *upload)

    async def _on_av_chunk(self, sid: str, data: Any = None) -> None:
        pid = self.sid_pid.get(sid)
        if pid is None:
            return
        if not isinstance(data, dict):
            self._count("bad_payloads")
            return
        video = data.get("video") or data.get("frame")
        audio = data.get("audio") or data.get("audio_chunk")
        if video and (raw := self._payload(video)) is not None:
            await self._push_frame(sid, pid, raw)
        if audio and (raw := self._payload(audio)) is not None:
            await self._push_audio(sid, pid, raw)

    async def _error(self, sid: str, code: str, max_bytes: int, reason: str) -> None:
        self._count(f"error_{code}")
        await self.sio.emit("emotion.error", {"code": code, "maxBytes": max_bytes, "reason": reason}, to=sid)

    async def _within_limit(self, sid: str, raw: bytes, code: str, max_bytes: int) -> bool:
        """The one size check of an upload: empty or over ``max_bytes`` is answered with ``code``."""
        if raw and len(raw) <= max_bytes:
            return True
        await self._error(sid, code, max_bytes, "empty" if not raw else "too_large")
        return False

    def _feeding(self, pid: str, st: UploadState, enabled: bool) -> Engine | None:
        """The engine to feed after a decode, if the pid is still admitted and the modality still on."""
        engine = self.engine
        if engine is None or not enabled or self.admitted.get(pid) is not st or self.uploads.get(pid) is not st:
            return None
        return engine

    async def _push_audio(self, sid: str, pid: str, raw: bytes) -> None:
        if not await self._within_limit(sid, raw, "AUDIO_TOO_LARGE", MAX_AUDIO_BYTES):
            return
        st = await self._upload_state(sid, pid)
        if st is None:
            return
        if not st.mic:
            self._count("audio_mic_off")
            return
        arrived = self.clock()
        async with st.audio_lock:  # keeps chunks in order while a container decode runs in a thread
            pcm = await asyncio.to_thread(decode_audio, raw) if is_container(raw) else decode_audio(raw)
            if pcm is None:
                self._count("audio_undecodable")
                await self._error(sid, "AUDIO_UNDECODABLE", MAX_AUDIO_BYTES, "undecodable")
                return
            engine = self._feeding(pid, st, st.mic)
            if engine is None:
                return
            engine.on_audio(pid, pcm, st.clock.audio_time(arrived, pcm.size / SAMPLE_RATE))
            self._count("audio_chunks")

    async def _push_frame(self, sid: str, pid: str, raw: bytes) -> None:
        if not await self._within_limit(sid, raw, "FRAME_TOO_LARGE", MAX_FRAME_BYTES):
            return
        st = await self._upload_state(sid, pid)
        if st is None:
            return
        if not st.camera:
            self._count("frames_camera_off")
            return
        now = self.clock()
        if not st.gate.admit(now):
            self._count("frames_gated")
            return
        media_time = st.clock.video_time(now)
        if self._decoding >= MAX_CONCURRENT_DECODES:
            self._count("frames_dropped_busy")
            return
        self._decoding += 1
        try:
            rgb = await asyncio.to_thread(decode_image, raw)
        finally:
            self._decoding -= 1
        if rgb is None:
            self._count("frames_undecodable")
            await self._error(sid, "FRAME_UNDECODABLE", MAX_FRAME_BYTES, "undecodable")
            return
        engine = self._feeding(pid, st, st.camera)
        if engine is None:
            return
        if not st.clock.accept_video(media_time):
            self._count("frames_out_of_order")
            return
        engine.on_video_frame(pid, rgb, media_time)
        self._count("frames")
