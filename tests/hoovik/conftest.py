"""Fixtures for the Hoovik tests: a relay with Hoovik's backend semantics, the real bot, real peers.

The models are the same real stack as the e2e tests (the golden artefacts imported into a bundle,
MediaPipe with the shared face asset, a tiny Wav2Vec2 saved with ``save_pretrained``), built once
per session here. Peers reach each other over loopback through ``bot.webrtc.ice.use_loopback_ice``.
Waits are "until X", bounded only so that a bug fails instead of hanging; nothing asserts speed.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

sys.path.insert(0, str(Path(__file__).parent))

from hoovik_browser import WAIT_S, BrowserPeer, HostUI, wait_until
from hoovik_relay import HoovikRelay, Store

from bot.config import BotConfig
from bot.contrib.clips import ClipMedia, load_clip
from bot.runtime import Runtime, build_runtime
from bot.service import BotService
from bot.uploads.access import EmotionServiceOptions
from bot.webrtc.ice import use_loopback_ice
from signaling.hoovik import HoovikOptions, HoovikSession

CLIPS = ("crema-d/1001_DFA_ANG_XX.flv", "crema-d/1001_DFA_HAP_XX.flv")


# --- models (session) ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def hoovik_bot_config(golden_bundle_dir: Path, tiny_wav2vec2_dir: Path, face_asset: Path) -> BotConfig:
    cfg = BotConfig()
    cfg.models.bundle = str(golden_bundle_dir)
    cfg.models.audio_model = str(tiny_wav2vec2_dir)
    cfg.models.face_asset = str(face_asset)
    cfg.models.offline = True
    return cfg


@pytest.fixture(scope="session")
def hoovik_runtime(hoovik_bot_config: BotConfig) -> Runtime:
    return build_runtime(hoovik_bot_config)


@pytest.fixture(scope="session")
def hoovik_clips(media_dir: Path) -> list[ClipMedia]:
    return [load_clip(media_dir / name, width=320, height=240, max_s=4.0) for name in CLIPS]


# --- relay --------------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def relay() -> AsyncIterator[HoovikRelay]:
    server = HoovikRelay()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def fast_options() -> Callable[..., HoovikOptions]:
    def make(**overrides: Any) -> HoovikOptions:
        base: dict[str, Any] = {"reconnect_delay_s": 0.2, "reconnect_delay_max_s": 1.0, "join_timeout_s": 5.0}
        base.update(overrides)
        return HoovikOptions(**base)

    return make


# --- a whole meeting: relay + bot (with the emotion-service endpoint) + browser peers -------------


@dataclass
class HoovikMeeting:
    relay: HoovikRelay
    service: BotService
    code: str
    clips: list[ClipMedia]
    options: HoovikOptions
    session: HoovikSession | None = None
    bot_task: asyncio.Task[None] | None = None
    peers: list[BrowserPeer] = field(default_factory=list)
    uis: list[HostUI] = field(default_factory=list)

    @property
    def bot_url(self) -> str:
        return f"http://127.0.0.1:{self.service.http_port}"

    async def start_bot(self) -> None:
        self.session = await HoovikSession.connect(self.relay.url, self.code, self.options)
        self.bot_task = asyncio.create_task(self.service.run_session(self.session))

    async def add_peer(self, user_id: str, clip: int = 0, **kwargs: Any) -> BrowserPeer:
        peer = BrowserPeer(self.relay.url, self.code, user_id, self.clips[clip % len(self.clips)], **kwargs)
        self.peers.append(peer)
        await peer.join()
        return peer

    async def host_ui(self, participant_id: str, **kwargs: Any) -> HostUI:
        ui = HostUI(self.bot_url, participant_id, **kwargs)
        await ui.connect()
        self.uis.append(ui)
        return ui

    def stats(self) -> dict[str, Any]:
        return {
            "bot": self.service.telemetry.stats(),
            "session": self.session.counters if self.session else None,
            "errors": self.service.participant.errors if self.service.participant else None,
        }

    async def wait(self, cond: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
        await wait_until(cond, what, timeout, self.stats)

    def sid_of(self, user_id: str) -> str | None:
        entry = self.relay.entries(self.code).get(user_id)
        return entry["socketId"] if entry else None


MeetingFactory = Callable[..., Awaitable[HoovikMeeting]]


@pytest_asyncio.fixture
async def hoovik_meeting(
    hoovik_bot_config: BotConfig, hoovik_runtime: Runtime, hoovik_clips: list[ClipMedia]
) -> AsyncIterator[MeetingFactory]:
    """Build a meeting on demand (options for the bot and its emotion endpoint); all torn down after."""
    use_loopback_ice()
    made: list[HoovikMeeting] = []

    async def make(
        emotion: EmotionServiceOptions | None = None, start_bot: bool = True, **session_options: Any
    ) -> HoovikMeeting:
        relay = HoovikRelay()
        await relay.start()
        service = BotService(hoovik_bot_config, emotion_service=emotion or EmotionServiceOptions())
        await service.start_http()
        await service.load(hoovik_runtime)
        base: dict[str, Any] = {"reconnect_delay_s": 0.2, "reconnect_delay_max_s": 1.0, "join_timeout_s": 5.0}
        base.update(session_options)
        meeting = HoovikMeeting(relay, service, relay.create_room(), hoovik_clips, HoovikOptions(**base))
        made.append(meeting)
        if start_bot:
            await meeting.start_bot()
        return meeting

    try:
        yield make
    finally:
        for m in made:
            for ui in m.uis:
                await ui.close()
            for peer in m.peers:
                await peer.stop()
            # End the bot the way the CLI does: close the session, let the participant wind down.
            # (Cancelling it instead can be swallowed inside aiortc's close of an ICE connection.)
            if m.session is not None:
                await m.session.close()
            if m.bot_task is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(m.bot_task), 10.0)
                except (TimeoutError, Exception):
                    m.bot_task.cancel()
            await m.service.stop()
            await m.relay.stop()


__all__ = ["BrowserPeer", "HoovikMeeting", "HoovikRelay", "HostUI", "Store", "wait_until"]
