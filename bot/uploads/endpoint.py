"""An endpoint that speaks the original emotion service's Socket.IO protocol (docs/hoovik.md).

Hoovik's host UI renders emotions only from ``emotion.result`` events on its emotion-service sockets:
one socket per remote participant, ``auth.participantId = <that participant's userId>``. Mounting
this server on the bot's aiohttp app (beside ``/health``, ``/ready``, ``/stats``, ``/stats/json``)
and pointing ``REACT_APP_EMOTION_SOCKET_URL`` at the bot makes the bot's results appear in the
stock UI, with no change to Hoovik.

Two ways a pid gets results here:

* **Meeting mode.** The bot is in the meeting and analyses each participant from the WebRTC media it
  receives itself. Results are published under the participant's ``userId`` to every socket whose
  ``auth.participantId`` is that id. Uploads for such a pid are validated (errors as the original)
  but not fed to the engine: the bot's own media is better than the host's 720x540 JPEG snapshots
  and 100 ms chunks, and analysing both would mix two sources in one sequence.
  ``participant.media_state`` for such a pid is ignored too: the bot learns mute state from
  Hoovik's signaling.
* **Upload mode** (drop-in replacement for the original service). A pid the bot does not know from a
  meeting is analysed from what its sockets upload: ``audio_chunk``, ``emotion.frame`` (alias
  ``frame``) and ``av_chunk``, with the original's payload shapes, limits and error codes. Decoded
  media goes into the same engine under participant id = pid; its state is freed when the pid's
  last socket disconnects. Upload pids are admitted up to a cap, and to a share of the engine while
  it analyses meeting participants, so uploads never starve a meeting.

Access (the original had none): a token is required on connections that arrive on a non-loopback
address unless ``open_access`` is set; a pid is bound to the credentials of its first socket; the
number of sockets is capped (:mod:`bot.uploads.access`; docs/hoovik.md, *Access control*).

``backpressure`` is never emitted: the bot samples at most one frame per participant per engine
step and throttles its own sampling under load (bot/pipeline/throttle.py), so a client sending fewer frames
would only make results staler. The stock UI reacts to ``backpressure`` by slowing capture for
*every* participant for 8 s.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import socketio
from aiohttp import web

from bot.config import EngineConfig
from bot.live.engine import Engine
from bot.pipeline.results import EmotionResult
from bot.uploads.access import (
    LIMIT_NOTICE_INTERVAL_S,
    MAX_HTTP_BUFFER,
    MAX_PENDING_EMITS,
    MAX_UPLOAD_STATES,
    MODALITIES,
    PID_KEYS,
    EmotionServiceOptions,
    UploadState,
    connection_is_loopback,
    credential,
    device_name,
    pid_room,
    same_credential,
)
from bot.uploads.ingest import UploadIngest
from bot.uploads.timing import FrameGate

log = logging.getLogger(__name__)


class EmotionService(UploadIngest):
    """The Socket.IO server (python-socketio ``AsyncServer`` on aiohttp) plus upload-mode state.

    All handlers run on the event loop; JPEG and container-audio decoding run in worker threads.
    ``engine()`` returns the engine once models are loaded (uploads before that are dropped and
    counted); ``is_meeting_participant(pid)`` tells whether the bot analyses that pid from a meeting.
    """

    def __init__(
        self,
        options: EmotionServiceOptions | None = None,
        *,
        engine_config: EngineConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        engine: Callable[[], Engine | None] = lambda: None,
        is_meeting_participant: Callable[[str], bool] = lambda pid: False,
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
        self._engine = engine
        self._closed = False
        self.is_meeting_participant = is_meeting_participant
        self.sid_pid: dict[str, str] = {}
        self.sid_cred: dict[str, str | None] = {}
        self.pid_sids: dict[str, set[str]] = {}
        self.pid_cred: dict[str, str | None] = {}
        self.uploads: OrderedDict[str, UploadState] = OrderedDict()
        # Upload pids in the engine, in admission order (the newest are evicted first).
        self.admitted: dict[str, UploadState] = {}
        self.counters: dict[str, int] = {}
        self._decoding = 0
        self._pending_emits = 0
        self._notified: dict[str, float] = {}
        self._warned_token = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._device: str | None = None
        fps = self.engine_config.target_fps
        self.target_fps: int | float = int(fps) if float(fps).is_integer() else fps
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
        if self.options.token is None and self.options.open_access:
            log.warning(
                "emotion-service endpoint is open (like the original): anyone who can reach it can read results "
                "by participant id; restrict origins and keep the port private, or set a token"
            )

    def attach(self, app: web.Application) -> None:
        """Mount on ``app`` at ``/<path>/`` (call before the app starts)."""
        self.sio.attach(app, socketio_path=self.options.path)

    @property
    def engine(self) -> Engine | None:
        """The engine uploads feed; None before models are loaded and after :meth:`close`."""
        return None if self._closed else self._engine()

    async def close(self) -> None:
        self._closed = True
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
        return pid in self.admitted

    @staticmethod
    def result_message(result_id: str, result: EmotionResult) -> dict[str, Any]:
        """The ``emotion.result`` payload: the original's fields (docs/results.md) first, our additions after."""
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
            await self.sio.emit("emotion.result", msg, room=pid_room(pid))
            self._count("results_sent")
        finally:
            self._pending_emits -= 1

    # -- connection ------------------------------------------------------------------------------

    def _refuse(self, code: str, message: str) -> None:
        self._count(f"refused_{code}")
        self._count("connections_refused")
        raise socketio.exceptions.ConnectionRefusedError(message, {"code": code})

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        auth = auth if isinstance(auth, dict) else {}
        opts = self.options
        if len(self.sid_pid) >= opts.max_sockets:
            self._refuse("too_many_sockets", f"too many connections (at most {opts.max_sockets})")
        if opts.token is not None:
            given = auth.get("token")
            if not isinstance(given, str) or not hmac.compare_digest(given.encode(), opts.token.encode()):
                self._refuse("unauthorized", "unauthorized")
        elif not opts.open_access and not connection_is_loopback(environ):
            if not self._warned_token:
                self._warned_token = True
                log.warning(
                    "emotion-service connection on a non-loopback address refused: set a token "
                    "(--emotion-token) or, for the stock Hoovik UI, allow connections without one (--emotion-open)"
                )
            self._refuse("token_required", "token required on non-loopback addresses")
        pid = sid
        for key in PID_KEYS:
            if auth.get(key):
                pid = str(auth[key])[:256]
                break
        cred = credential(auth)
        # A pid is bound to the credentials of its first socket while it has any socket.
        if self.pid_sids.get(pid) and not same_credential(self.pid_cred.get(pid), cred):
            self._refuse("participant_in_use", "participantId is in use by another client")
        if not self.pid_sids.get(pid):
            self.pid_cred[pid] = cred
        self.sid_pid[sid] = pid
        self.sid_cred[sid] = cred
        self.pid_sids.setdefault(pid, set()).add(sid)
        await self.sio.enter_room(sid, pid_room(pid))
        self._count("connections")
        if self._device is None:
            self._device = device_name()
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
        self.sid_cred.pop(sid, None)
        self._notified.pop(sid, None)
        if pid is None:
            return
        sids = self.pid_sids.get(pid)
        if sids is not None:
            sids.discard(sid)
            if not sids:
                del self.pid_sids[pid]
                self.pid_cred.pop(pid, None)
                self._forget_upload(pid)

    def _forget_upload(self, pid: str) -> None:
        """The pid's last socket is gone: free its upload state and engine state (as the original)."""
        st = self.uploads.pop(pid, None)
        if st is not None:
            self._release(st, remove=True)

    # -- admission -------------------------------------------------------------------------------

    def upload_allowance(self) -> int:
        """How many upload pids the engine may hold now: the cap, and while meeting participants are
        analysed, at most ``upload_share`` of all engine participants."""
        cap = max(0, self.options.max_upload_participants)
        engine = self.engine
        if engine is None:
            return cap
        meeting = max(0, len(engine.participants) - sum(1 for pid in self.admitted if pid in engine.participants))
        share = self.options.upload_share
        if meeting > 0 and share < 1.0:
            cap = min(cap, math.floor(max(0.0, share) / (1.0 - share) * meeting + 1e-9))
        return cap

    def _admit(self, st: UploadState, engine: Engine) -> None:
        engine.add_participant(st.pid, st.pid, "participant", mic=st.mic, camera=st.camera)
        st.in_engine = True
        self.admitted[st.pid] = st
        self._count("uploads_admitted")

    def _release(self, st: UploadState, *, remove: bool) -> None:
        """Take an upload pid out of the admitted set (and its state out of the engine if ``remove``)."""
        was = self.admitted.pop(st.pid, None) is st
        if st.in_engine and was and remove and self.engine is not None:
            self.engine.remove_participant(st.pid)
        st.in_engine = False

    async def _notify_limit(self, sid: str, reason: str, allowance: int) -> None:
        self._count(f"uploads_refused_{reason}")
        now = self.clock()
        last = self._notified.get(sid)
        if last is not None and now - last < LIMIT_NOTICE_INTERVAL_S:
            return
        self._notified[sid] = now
        await self.sio.emit(
            "emotion.error", {"code": "UPLOAD_LIMIT", "reason": reason, "maxParticipants": allowance}, to=sid
        )

    async def _upload_state(self, sid: str, pid: str) -> UploadState | None:
        """The pid's upload state, in the engine; ``None`` when its uploads must not be analysed."""
        if not self.options.uploads:
            self._count("uploads_disabled")
            return None
        st = self._state(pid)
        if self.is_meeting_participant(pid):
            # The meeting's WebRTC media wins. If uploads came first, the engine state now belongs to
            # the meeting participant (same key in native rooms): hand it over, do not remove it.
            self._release(st, remove=False)
            self._count("uploads_superseded")
            return None
        engine = self.engine
        if engine is None:
            self._count("uploads_not_ready")
            return None
        if st.in_engine and self.admitted.get(pid) is st and pid in engine.participants:
            allowance = self.upload_allowance()
            if len(self.admitted) > allowance and list(self.admitted).index(pid) >= allowance:
                # The allowance fell (a meeting started or shrank): the newest uploads make room.
                self._release(st, remove=True)
                await self._notify_limit(sid, "meeting_share", allowance)
                return None
            return st
        self._release(st, remove=False)
        if pid in engine.participants:
            # An engine participant that is not ours (a meeting peer keyed by this id): never feed it.
            await self._notify_limit(sid, "participant_in_use", self.upload_allowance())
            return None
        allowance = self.upload_allowance()
        if len(self.admitted) >= allowance:
            reason = "too_many_participants" if allowance >= self.options.max_upload_participants else "meeting_share"
            await self._notify_limit(sid, reason, allowance)
            return None
        self._admit(st, engine)
        return st

    def _state(self, pid: str) -> UploadState:
        st = self.uploads.get(pid)
        if st is None:
            st = self.uploads[pid] = UploadState(pid, FrameGate(float(self.engine_config.target_fps)))
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

    # -- media state and keepalive ---------------------------------------------------------------

    async def _on_media_state(self, sid: str, data: Any = None) -> None:
        pid = self.sid_pid.get(sid)
        if pid is None or not isinstance(data, dict):
            return
        claimed = data.get("participantId") or data.get("participant_id")
        if claimed:
            # The original's relay path (a host reports a remote participant), but not for a pid
            # bound to another client's credentials.
            target = str(claimed)[:256]
            if self.pid_sids.get(target) and not same_credential(self.pid_cred.get(target), self.sid_cred.get(sid)):
                self._count("media_state_refused")
                return
            pid = target
        mic = bool(data.get("micEnabled", True))
        camera = bool(data.get("cameraEnabled", True))
        if self.is_meeting_participant(pid):
            self._count("media_state_ignored_meeting")
            return
        st = self._state(pid)
        st.mic, st.camera = mic, camera
        engine = self.engine
        if self.admitted.get(pid) is st and engine is not None:
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
            "uploadParticipants": sorted(self.admitted),
            "uploadAllowance": self.upload_allowance(),
            "counters": dict(self.counters),
        }
