"""One bot process: telemetry HTTP server, models, engine and the meeting session, wired together.

The HTTP server starts first so that ``/health`` answers and ``/ready`` says 503 while the models
load (which takes seconds with production weights); ``/ready`` turns 200 once the engine runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import web

from bot.config import BotConfig
from bot.engine import Engine
from bot.participant import BotParticipant
from bot.results import EmotionResult
from bot.runtime import Runtime, build_runtime
from bot.telemetry import Telemetry
from models.face import FaceFeatureExtractor
from signaling.base import SignalingSession

log = logging.getLogger(__name__)


class BotService:
    """Owns the engine and the telemetry server; runs a participant per signaling session."""

    def __init__(self, cfg: BotConfig) -> None:
        self.cfg = cfg
        self.telemetry = Telemetry()
        self.runtime: Runtime | None = None
        self.engine: Engine | None = None
        self.participant: BotParticipant | None = None
        self.result_listeners: list[Callable[[EmotionResult], None]] = []
        self._runner: web.AppRunner | None = None
        self.http_port: int | None = None

    async def start_http(self) -> int:
        app = web.Application()
        app.add_routes(self.telemetry.routes())
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
        self.runtime = runtime
        face_asset = runtime.face_asset
        self.engine = await asyncio.to_thread(
            Engine,
            self.cfg.engine,
            predictor=runtime.predictor,
            norm=runtime.bundle.norm,
            make_face_extractor=lambda: FaceFeatureExtractor(face_asset),
            audio_embedder=runtime.audio,
            bundle=runtime.info,
            on_result=self._on_result,
        )
        self.telemetry.engine = self.engine
        self.telemetry.extra = lambda: {"model": runtime.describe()}
        await self.engine.start()
        self.telemetry.ready = True
        return runtime

    def _on_result(self, result: EmotionResult) -> None:
        self.telemetry.observe(result)
        if self.participant is not None:
            self.participant.router.route(result)
        for listener in self.result_listeners:
            listener(result)

    async def run_session(self, session: SignalingSession) -> None:
        if self.engine is None:
            raise RuntimeError("load() the models before running a session")
        self.participant = BotParticipant(session, self.engine, self.cfg.server.ice_servers)
        await self.participant.run()

    async def stop(self) -> None:
        self.telemetry.ready = False
        if self.participant is not None:
            await self.participant.close()
        if self.engine is not None:
            await self.engine.stop()
        if self._runner is not None:
            await self._runner.cleanup()
