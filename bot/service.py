"""One bot process: telemetry HTTP server, models, engine and the meeting session, wired together.

The HTTP server starts first so that ``/health`` answers and ``/ready`` says 503 while the models
load (which takes seconds with production weights); ``/ready`` turns 200 once the engine runs.

Optionally the same HTTP server carries an emotion-service-compatible Socket.IO endpoint
(:mod:`bot.uploads`): Hoovik's host UI pointed at the bot receives ``emotion.result`` for
each participant's ``userId``. Anything else that needs the aiohttp app before it starts can be
added through ``http_hooks``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from bot.config import BotConfig
from bot.live.engine import Engine
from bot.pipeline.intraop import IntraOpThreads
from bot.pipeline.results import EmotionResult
from bot.runtime import Runtime, build_runtime
from bot.telemetry import Telemetry
from bot.uploads.access import MAX_HTTP_BUFFER, EmotionServiceOptions
from bot.uploads.endpoint import EmotionService
from bot.webrtc.participant import BotParticipant
from bot.webrtc.router import ResultRouter
from signaling.base import SignalingSession

log = logging.getLogger(__name__)


class BotService:
    """Owns the engine and the telemetry server; runs a participant per signaling session.

    With ``emotion_service`` options, the telemetry server also serves the emotion-service protocol
    and every result is published there under the participant's result id (its Hoovik ``userId``).
    """

    def __init__(
        self,
        cfg: BotConfig,
        *,
        emotion_service: EmotionServiceOptions | None = None,
        telemetry_token: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.runtime: Runtime | None = None
        self._owns_runtime = False
        self.engine: Engine | None = None
        self.telemetry = Telemetry(token=telemetry_token, engine=lambda: self.engine, extra=self._extra_stats)
        self.participant: BotParticipant | None = None
        self.router: ResultRouter | None = None
        """The current session's result route (its subject and the hosts); see bot/webrtc/router.py."""
        self.end_reason: str | None = None
        """The last session's ``Disconnected`` reason (``replaced``, ``room_not_found``, …)."""
        self.result_listeners: list[Callable[[EmotionResult], None]] = []
        self._runner: web.AppRunner | None = None
        self.http_port: int | None = None
        self.http_hooks: list[Callable[[web.Application], None]] = []
        self.emotion: EmotionService | None = None
        if emotion_service is not None:
            self.emotion = EmotionService(
                emotion_service,
                engine_config=cfg.engine,
                engine=lambda: self.engine,
                is_meeting_participant=self.is_meeting_result_id,
            )
            self.http_hooks.append(self.emotion.attach)

    async def start_http(self) -> int:
        # Room for the emotion service's 4 MiB frames on the long-polling transport as well.
        app = web.Application(client_max_size=MAX_HTTP_BUFFER + 64 * 1024)
        app.add_routes(self.telemetry.routes())
        for hook in self.http_hooks:
            hook(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.cfg.server.http_host, self.cfg.server.http_port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.http_port = int(sockets[0].getsockname()[1]) if sockets else self.cfg.server.http_port
        log.info("telemetry on http://%s:%s/stats", self.cfg.server.http_host, self.http_port)
        return self.http_port

    async def load(self, runtime: Runtime | None = None, *, allow_untrained_audio: bool = False) -> Runtime:
        """Load models off the loop (or take a prebuilt runtime), start the engine, turn ready."""
        if runtime is None:
            runtime = await asyncio.to_thread(build_runtime, self.cfg, allow_untrained_audio=allow_untrained_audio)
            self._owns_runtime = True  # built here, so closed here (a worker's shared one is not)
        self.runtime = runtime
        self.engine = await asyncio.to_thread(
            Engine,
            self.cfg.engine,
            predictor=runtime.predictor,
            features=runtime.features,
            make_face_extractor=runtime.make_face_extractor,
            audio_embedder=runtime.audio,
            bundle=runtime.info,
            on_result=self._on_result,
            intra_op=IntraOpThreads(self.cfg.engine.torch_threads, self.cfg.engine.boost_torch_threads),
        )
        await self.engine.start()
        self.telemetry.ready = True
        return runtime

    def _extra_stats(self) -> dict[str, Any]:
        if self.runtime is None or self.engine is None:
            return {}
        extra: dict[str, Any] = {"model": self.runtime.describe()}
        if self.emotion is not None:
            extra["emotionService"] = self.emotion.stats()
        return extra

    def is_meeting_result_id(self, result_id: str) -> bool:
        """Whether the bot analyses ``result_id`` from a meeting's WebRTC media (so uploads for it
        are not needed): a joined peer reported under that user id, or a connected peer with that id."""
        p = self.participant
        if p is None:
            return False
        return result_id in p.result_ids.values() or any(p.result_id(pid) == result_id for pid in p.peers)

    def result_id(self, participant_id: str) -> str:
        """The id a result about an engine participant is published under."""
        if self.emotion is not None and self.emotion.is_upload_participant(participant_id):
            return participant_id
        return self.participant.result_id(participant_id) if self.participant is not None else participant_id

    def _on_result(self, result: EmotionResult) -> None:
        self.telemetry.observe(result)
        uploaded = self.emotion is not None and self.emotion.is_upload_participant(result.participant_id)
        if self.router is not None and not uploaded:
            self.router.route(result)
        if self.emotion is not None:
            self.emotion.publish(self.result_id(result.participant_id), result)
        for listener in self.result_listeners:
            listener(result)

    async def run_session(self, session: SignalingSession) -> None:
        """Run the bot in ``session`` until it ends; :attr:`end_reason` then says why."""
        if self.engine is None:
            raise RuntimeError("load() the models before running a session")
        self.router = ResultRouter(session)
        self.participant = BotParticipant(session, self.engine, self.cfg.server.ice_servers, router=self.router)
        self.end_reason = await self.participant.run()

    async def stop(self) -> None:
        self.telemetry.ready = False
        if self.emotion is not None:
            await self.emotion.close()
        if self.participant is not None:
            await self.participant.close()
        if self.engine is not None:
            await self.engine.stop()
        if self._owns_runtime and self.runtime is not None:
            await asyncio.to_thread(self.runtime.close)
        if self._runner is not None:
            await self._runner.cleanup()
