"""An endpoint that speaks the original emotion service's Socket.IO protocol (spec section 2).

Hoovik's host UI renders emotions only from ``emotion.result`` events on its emotion-service sockets:
one socket per remote participant, ``auth.participantId = <that participant's userId>``. Mounting
this server on the bot's aiohttp app (beside ``/health``, ``/ready``, ``/stats``, ``/stats/json``)
and pointing ``REACT_APP_EMOTION_SOCKET_URL`` at the bot makes the bot's results appear in the
stock UI, with no change to Hoovik.

Two ways a pid gets results here:

* **Meeting mode.** The bot is in the meeting and analyses each participant from the WebRTC media it
  receives itself. Results are published under the participant's ``userId`` to every socket whose
  ``auth.participantId`` is that id. Uploads for such a pid are validated (errors as the original)
  but not fed to the engine: the bot's own media (every frame, 48 kHz audio) is better than the host's
  720x540 JPEG snapshots and 100 ms chunks, and analysing both would double the work and mix two
  sources in one sequence. ``participant.media_state`` for such a pid is ignored too: the bot learns
  mute state directly from Hoovik's signaling, and the host would report ``cameraEnabled: true``
  always, or turn everything off when it stops capturing.
* **Upload mode** (drop-in replacement for the original service). A pid the bot does not know from a
  meeting is analysed from what its sockets upload: ``audio_chunk``, ``emotion.frame`` (alias
  ``frame``) and ``av_chunk``, with the original's payload shapes, limits, error codes, 0.2 s frame
  gate, ``backpressure`` events and ``participant.media_state``. Decoded media goes into the same
  engine under participant id = pid; its state is freed when the pid's last socket disconnects.

Differences from the original, on purpose: results come at the engine's cadence (one per 0.3 s
while a modality is live) rather than being clocked by audio-chunk arrivals; audio embeddings use
the engine's 0.6 s window over the uploaded stream instead of one 100 ms chunk; an empty payload is
reported (``emotion.error`` with the size code and ``reason: "empty"``) where the original's handler
silently ignored it. ``emotion.result`` carries the original's fields exactly, plus the additions
documented in docs/results.md.

Access: the original had no authentication. ``token`` requires ``auth.token`` to match (the stock
Hoovik UI cannot send it, so it suits only modified or non-browser clients); ``allowed_origins``
restricts browser origins (compatible with the stock UI, but a non-browser client can still connect,
since the check only applies to requests carrying an ``Origin`` header).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import io
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
import socketio
from aiohttp import web
from PIL import Image

from bot.config import EngineConfig
from bot.engine import Engine
from bot.results import EmotionResult
from models.constants import SAMPLE_RATE

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 4 * 1024 * 1024
MAX_AUDIO_BYTES = 2 * 1024 * 1024
MAX_HTTP_BUFFER = 8 * 1024 * 1024
BACKPRESSURE_QUEUE_DEPTH = 3
MAX_IMAGE_PIXELS = 4096 * 4096
MAX_DECODED_AUDIO_S = 30.0
MAX_CONCURRENT_DECODES = 8
MAX_UPLOAD_STATES = 1024
MAX_PENDING_EMITS = 1024
PAYLOAD_KEYS = ("buffer", "data", "payload", "chunk")
PID_KEYS = ("participantId", "participant_id", "pid")
MODALITIES = ["video_only", "audio_only", "both"]
# libsndfile's containers the original decoded (WAV/RF64, FLAC, OGG, AIFF, CAF); anything else that
# is a multiple of 4 bytes is raw little-endian float32, as the browser's AudioWorklet sends it.
_AUDIO_MAGIC = (b"RIFF", b"RIFX", b"RF64", b"fLaC", b"OggS", b"FORM", b"caff")


# --- payloads -----------------------------------------------------------------------------------


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

    Shapes (spec 2.2): raw bytes, a base64 string, a list of ints, or a dict whose first present key
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


def decode_audio(raw: bytes) -> np.ndarray | None:
    """Audio bytes → float32 mono at 16 kHz, or ``None`` when they are neither a known container
    nor raw float32. Containers are decoded with PyAV, down-mixed by the channel mean and resampled
    by linear interpolation (the original's rule); raw float32 is taken as is. Non-finite samples
    become 0 so that one bad chunk cannot poison the Wav2Vec2 window."""
    pcm: np.ndarray | None = None
    if raw[:4] in _AUDIO_MAGIC:
        pcm = _decode_container_audio(raw)
    if pcm is None and len(raw) % 4 == 0 and raw:
        pcm = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if pcm is None or pcm.size == 0:
        return None
    if not np.all(np.isfinite(pcm)):
        pcm = np.nan_to_num(pcm, nan=0.0, posinf=0.0, neginf=0.0)
    return pcm


def _decode_container_audio(raw: bytes) -> np.ndarray | None:
    try:
        with av.open(io.BytesIO(raw), mode="r") as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            rate = int(stream.codec_context.sample_rate or stream.rate or 0)
            if rate <= 0:
                return None
            limit = int(MAX_DECODED_AUDIO_S * rate)
            resampler = av.AudioResampler(format="fltp")
            chunks: list[np.ndarray] = []
            total = 0
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    arr = out.to_ndarray().reshape(len(out.layout.channels), -1)
                    chunks.append(arr.mean(axis=0))
                    total += arr.shape[1]
                if total >= limit:
                    break
    except (av.FFmpegError, ValueError, IndexError):
        return None
    if not chunks:
        return None
    audio = np.concatenate(chunks)[:limit].astype(np.float32)
    if rate != SAMPLE_RATE:
        n = int(len(audio) * SAMPLE_RATE / rate)
        audio = np.interp(np.linspace(0, len(audio) - 1, n), np.arange(len(audio)), audio).astype(np.float32)
    return audio


def decode_image(raw: bytes) -> np.ndarray | None:
    """JPEG/PNG/WebP bytes → RGB uint8 array, or ``None`` if undecodable or larger than 16 MP."""
    try:
        with Image.open(io.BytesIO(raw)) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                return None
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _device() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
    except Exception:
        pass
    return "cpu"


# --- the server ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmotionServiceOptions:
    """Access control and features of the emotion-service endpoint."""

    token: str | None = None
    """Require ``auth.token`` to equal this; the stock Hoovik UI cannot send it."""
    allowed_origins: tuple[str, ...] | None = None
    """Browser origins allowed to connect (``None``: any, as the original)."""
    uploads: bool = True
    """Accept ``audio_chunk`` / ``emotion.frame`` / ``av_chunk`` for pids not analysed from a meeting."""
    path: str = "socket.io"


@dataclass
class UploadState:
    """One upload-mode pid: media state, frame gate and the media clock of its uploads."""

    pid: str
    mic: bool = True
    camera: bool = True
    in_engine: bool = False
    accept_after: float = 0.0
    samples: int = 0
    first_frame: float | None = None
    audio_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _room(pid: str) -> str:
    # Prefixed so that a chosen participantId can never name another socket's own sid room.
    return f"pid:{pid}"


class EmotionService:
    """The Socket.IO server (python-socketio ``AsyncServer`` on aiohttp) plus upload-mode state.

    All handlers run on the event loop; JPEG and container-audio decoding run in worker threads.
    ``engine`` is set once models are loaded (uploads before that are dropped and counted);
    ``is_meeting_participant(pid)`` tells whether the bot analyses that pid from a meeting.
    """

    def __init__(
        self,
        options: EmotionServiceOptions | None = None,
        *,
        engine_config: EngineConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.options = options or EmotionServiceOptions()
        self.engine_config = engine_config or EngineConfig()
        self.clock = clock
        self.wall_clock = wall_clock
        origins: str | list[str] = "*" if self.options.allowed_origins is None else list(self.options.allowed_origins)
        self.sio = socketio.AsyncServer(
            async_mode="aiohttp",
            cors_allowed_origins=origins,
            ping_interval=15,
            ping_timeout=30,
            max_http_buffer_size=MAX_HTTP_BUFFER,
            logger=False,
            engineio_logger=False,
        )
        self.engine: Engine | None = None
        self.is_meeting_participant: Callable[[str], bool] = lambda pid: False
        self.sid_pid: dict[str, str] = {}
        self.pid_sids: dict[str, set[str]] = {}
        self.uploads: OrderedDict[str, UploadState] = OrderedDict()
        self.counters: dict[str, int] = {}
        self._decoding = 0
        self._pending_emits = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._device: str | None = None
        fps = self.engine_config.target_fps
        self.target_fps: int | float = int(fps) if float(fps).is_integer() else fps
        self.frame_interval_s = 1.0 / fps
        self.suggested_fps = max(1, int(fps) // 2)
        for event, handler in (
            ("connect", self._on_connect),
            ("disconnect", self._on_disconnect),
            ("audio_chunk", self._on_audio_chunk),
            ("emotion.frame", self._on_frame),
            ("frame", self._on_frame),
            ("av_chunk", self._on_av_chunk),
            ("participant.media_state", self._on_media_state),
            ("ping", self._on_ping),
        ):
            self.sio.on(event, handler)
        if self.options.token is None and self.options.allowed_origins is None:
            log.warning(
                "emotion-service endpoint has no access control (like the original): anyone who can reach "
                "it can read results by participant id; set a token or allowed origins where that matters"
            )

    def attach(self, app: web.Application) -> None:
        """Mount on ``app`` at ``/<path>/`` (call before the app starts)."""
        self.sio.attach(app, socketio_path=self.options.path)

    async def close(self) -> None:
        self.engine = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for sid in list(self.sid_pid):
            try:
                await self.sio.disconnect(sid)
            except Exception:
                log.debug("disconnecting %s failed", sid, exc_info=True)

    # -- results ---------------------------------------------------------------------------------

    def has_listeners(self, pid: str) -> bool:
        return bool(self.pid_sids.get(pid))

    def is_upload_participant(self, pid: str) -> bool:
        st = self.uploads.get(pid)
        return st is not None and st.in_engine

    @staticmethod
    def result_message(result_id: str, result: EmotionResult) -> dict[str, Any]:
        """The ``emotion.result`` payload: the original's fields (spec 2.3) first, our additions after."""
        msg = result.to_message()
        msg.pop("event", None)
        msg["participantId"] = result_id
        return msg

    def publish(self, result_id: str, result: EmotionResult) -> None:
        """Send one result to every socket of ``result_id``; called on the loop by the result sink."""
        if not self.has_listeners(result_id):
            return
        if self._pending_emits >= MAX_PENDING_EMITS:
            self._count("results_dropped")
            return
        self._pending_emits += 1
        self._spawn(self._emit_result(result_id, self.result_message(result_id, result)))

    async def _emit_result(self, pid: str, msg: dict[str, Any]) -> None:
        try:
            await self.sio.emit("emotion.result", msg, room=_room(pid))
            self._count("results_sent")
        finally:
            self._pending_emits -= 1

    # -- connection ------------------------------------------------------------------------------

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        auth = auth if isinstance(auth, dict) else {}
        token = self.options.token
        if token is not None:
            given = auth.get("token")
            if not isinstance(given, str) or not hmac.compare_digest(given.encode(), token.encode()):
                self._count("connections_refused")
                raise socketio.exceptions.ConnectionRefusedError("unauthorized")
        pid = sid
        for key in PID_KEYS:
            if auth.get(key):
                pid = str(auth[key])[:256]
                break
        self.sid_pid[sid] = pid
        self.pid_sids.setdefault(pid, set()).add(sid)
        await self.sio.enter_room(sid, _room(pid))
        self._count("connections")
        if self._device is None:
            self._device = _device()
        await self.sio.emit(
            "server.status",
            {
                "status": "connected",
                "participantId": pid,
                "device": self._device,
                "seqLen": self.engine_config.seq_len,
                "targetFps": self.target_fps,
                "modalityStaleSec": self.engine_config.modality_stale_s,
                "modalities": MODALITIES,
                "ts": int(self.wall_clock() * 1000),
            },
            to=sid,
        )

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        pid = self.sid_pid.pop(sid, None)
        if pid is None:
            return
        sids = self.pid_sids.get(pid)
        if sids is not None:
            sids.discard(sid)
            if not sids:
                del self.pid_sids[pid]
                self._forget_upload(pid)

    def _forget_upload(self, pid: str) -> None:
        """The pid's last socket is gone: free its upload state and engine state (as the original)."""
        st = self.uploads.pop(pid, None)
        if st is not None and st.in_engine and self.engine is not None:
            self.engine.remove_participant(pid)

    # -- uploads ---------------------------------------------------------------------------------

    async def _on_audio_chunk(self, sid: str, data: Any = None) -> None:
        pid = self.sid_pid.get(sid)
        if pid is None:
            return
        raw = payload_bytes(data)
        if raw is None:
            self._count("bad_payloads")
            return
        await self._push_audio(sid, pid, raw)

    async def _on_frame(self, sid: str, data: Any = None) -> None:
        pid = self.sid_pid.get(sid)
        if pid is None:
            return
        raw = payload_bytes(data)
        if raw is None:
            self._count("bad_payloads")
            return
        await self._push_frame(sid, pid, raw)

    async def _on_av_chunk(self, sid: str, data: Any = None) -> None:
        pid = self.sid_pid.get(sid)
        if pid is None:
            return
        if not isinstance(data, dict):
            self._count("bad_payloads")
            return
        video = data.get("video") or data.get("frame")
        audio = data.get("audio") or data.get("audio_chunk")
        if video:
            raw = payload_bytes(video)
            if raw is None:
                self._count("bad_payloads")
            else:
                await self._push_frame(sid, pid, raw)
        if audio:
            raw = payload_bytes(audio)
            if raw is None:
                self._count("bad_payloads")
            else:
                await self._push_audio(sid, pid, raw)

    async def _error(self, sid: str, code: str, max_bytes: int, reason: str) -> None:
        self._count(f"error_{code}")
        await self.sio.emit("emotion.error", {"code": code, "maxBytes": max_bytes, "reason": reason}, to=sid)

    def _upload_state(self, pid: str) -> UploadState | None:
        """The pid's upload state, in the engine; ``None`` when its uploads must not be analysed."""
        if not self.options.uploads:
            self._count("uploads_disabled")
            return None
        st = self._state(pid)
        if self.is_meeting_participant(pid):
            # The meeting's WebRTC media wins. If uploads came first, the engine state now belongs to
            # the meeting participant (same key in native rooms): hand it over, do not remove it.
            st.in_engine = False
            self._count("uploads_superseded")
            return None
        engine = self.engine
        if engine is None:
            self._count("uploads_not_ready")
            return None
        if not st.in_engine or pid not in engine.participants:
            engine.add_participant(pid, pid, "participant", mic=st.mic, camera=st.camera)
            st.in_engine = True
        return st

    def _state(self, pid: str) -> UploadState:
        st = self.uploads.get(pid)
        if st is None:
            st = self.uploads[pid] = UploadState(pid)
            self._evict()
        else:
            self.uploads.move_to_end(pid)
        return st

    def _evict(self) -> None:
        """Bound the states kept for pids without sockets (media_state may name any pid)."""
        if len(self.uploads) <= MAX_UPLOAD_STATES:
            return
        for pid in list(self.uploads):
            if len(self.uploads) <= MAX_UPLOAD_STATES:
                break
            if not self.pid_sids.get(pid):
                self._forget_upload(pid)

    async def _push_audio(self, sid: str, pid: str, raw: bytes) -> None:
        if not raw or len(raw) > MAX_AUDIO_BYTES:
            await self._error(sid, "AUDIO_TOO_LARGE", MAX_AUDIO_BYTES, "empty" if not raw else "too_large")
            return
        st = self._upload_state(pid)
        if st is None:
            return
        if not st.mic:
            self._count("audio_mic_off")
            return
        async with st.audio_lock:  # keeps chunks in order while a container decode runs in a thread
            pcm = decode_audio(raw) if raw[:4] not in _AUDIO_MAGIC else await asyncio.to_thread(decode_audio, raw)
            if pcm is None:
                self._count("audio_undecodable")
                return
            engine = self.engine
            if engine is None or not st.mic or not st.in_engine or self.uploads.get(pid) is not st:
                return
            st.samples += int(pcm.size)
            engine.on_audio(pid, pcm, st.samples / SAMPLE_RATE)
            self._count("audio_chunks")

    async def _push_frame(self, sid: str, pid: str, raw: bytes) -> None:
        if not raw or len(raw) > MAX_FRAME_BYTES:
            await self._error(sid, "FRAME_TOO_LARGE", MAX_FRAME_BYTES, "empty" if not raw else "too_large")
            return
        st = self._upload_state(pid)
        if st is None:
            return
        if not st.camera:
            self._count("frames_camera_off")
            return
        now = self.clock()
        if now < st.accept_after:
            self._count("frames_gated")
            return
        st.accept_after = now + self.frame_interval_s
        await self._maybe_backpressure(sid)
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
            return
        engine = self.engine
        if engine is None or not st.camera or not st.in_engine or self.uploads.get(pid) is not st:
            return
        if st.first_frame is None:
            st.first_frame = now
        engine.on_video_frame(pid, rgb, now - st.first_frame)
        self._count("frames")

    def face_jobs_in_flight(self) -> int:
        """Frames being decoded plus face jobs queued or running in the engine (all pids)."""
        engine = self.engine
        return self._decoding + (engine.face_pool.depth if engine is not None else 0)

    async def _maybe_backpressure(self, sid: str) -> None:
        depth = self.face_jobs_in_flight()
        if depth >= BACKPRESSURE_QUEUE_DEPTH:
            self._count("backpressure")
            payload = {"queueDepth": depth, "suggestedFps": self.suggested_fps, "ts": int(self.wall_clock() * 1000)}
            await self.sio.emit("backpressure", payload, to=sid)

    # -- media state and keepalive ---------------------------------------------------------------

    async def _on_media_state(self, sid: str, data: Any = None) -> None:
        pid = self.sid_pid.get(sid)
        if pid is None or not isinstance(data, dict):
            return
        claimed = data.get("participantId") or data.get("participant_id")
        if claimed:
            pid = str(claimed)[:256]  # the original's relay path: a host reports a remote participant
        mic = bool(data.get("micEnabled", True))
        camera = bool(data.get("cameraEnabled", True))
        if self.is_meeting_participant(pid):
            self._count("media_state_ignored_meeting")
            return
        st = self._state(pid)
        st.mic, st.camera = mic, camera
        engine = self.engine
        if st.in_engine and engine is not None:
            engine.set_media(pid, mic=mic, camera=camera)
        self._count("media_states")

    async def _on_ping(self, sid: str, data: Any = None) -> None:
        await self.sio.emit("pong", {"ts": int(self.wall_clock() * 1000)}, to=sid)

    # -- bookkeeping -----------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    def stats(self) -> dict[str, Any]:
        return {
            "sockets": len(self.sid_pid),
            "participantIds": sorted(self.pid_sids),
            "uploadParticipants": sorted(pid for pid, st in self.uploads.items() if st.in_engine),
            "counters": dict(self.counters),
        }
