"""End-to-end fixtures: a real signaling server, the real bot and real aiortc participants.

The models are the real stack: the golden artefact directory imported into a bundle, MediaPipe
with the shared face asset, and a tiny Wav2Vec2 that the tests build and save with
``save_pretrained`` so the real loading code runs. Peers connect over loopback through aioice's
host-address hook (``bot.webrtc.ice.use_loopback_ice``) with no ICE servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio

from bot.config import BotConfig
from bot.contrib.clips import ClipMedia, load_clip
from bot.contrib.simulated import SimulatedParticipant
from bot.runtime import Runtime, build_runtime
from bot.service import BotService
from bot.webrtc.ice import use_loopback_ice
from signaling.client import SignalingClient, create_room, mint_invite
from signaling.server import SignalingServer

CLIPS = ("crema-d/1001_DFA_ANG_XX.flv", "crema-d/1001_DFA_HAP_XX.flv", "ravdess/01-01-01-01-01-01-01.mp4")


@pytest.fixture(scope="session")
def bot_config(golden_bundle_dir: Path, tiny_wav2vec2_dir: Path, face_asset: Path) -> BotConfig:
    cfg = BotConfig()
    cfg.models.bundle = str(golden_bundle_dir)
    cfg.models.audio_model = str(tiny_wav2vec2_dir)
    cfg.models.face_asset = str(face_asset)
    cfg.models.offline = True
    return cfg


@pytest.fixture(scope="session")
def runtime(bot_config: BotConfig) -> Runtime:
    return build_runtime(bot_config)


@pytest.fixture(scope="session")
def clips(media_dir: Path) -> list[ClipMedia]:
    # 320x240 keeps three encoders, three decoders and the bot within two cores in CI.
    return [load_clip(media_dir / name, width=320, height=240, max_s=4.0) for name in CLIPS]


@dataclass
class Meeting:
    secret: bytes
    server: SignalingServer
    service: BotService
    room: str
    host_token: str
    clips: list[ClipMedia]
    participants: list[SimulatedParticipant] = field(default_factory=list)
    bot_task: asyncio.Task[None] | None = None

    async def add(self, pid: str, role: str = "participant", clip: int = 0, **kwargs: object) -> SimulatedParticipant:
        token = (
            self.host_token
            if role == "host"
            else await mint_invite(self.server.url, self.room, self.host_token, "participant")
        )
        sim = SimulatedParticipant(
            self.server.ws_url,
            self.room,
            token,
            pid,
            pid,
            self.clips[clip % len(self.clips)],
            role=role,
            **kwargs,  # type: ignore[arg-type]
        )
        await sim.start()
        self.participants.append(sim)
        return sim

    async def wait_for(self, cond: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what}; bot stats: {self.service.telemetry.stats()}"
                )
            await asyncio.sleep(0.05)


@pytest.fixture(scope="session")
def starter_config(face_asset: Path) -> BotConfig:
    """No --bundle: the shipped starter bundle, as a new user gets it."""
    cfg = BotConfig()
    cfg.models.face_asset = str(face_asset)
    cfg.models.offline = True
    return cfg


@pytest.fixture(scope="session")
def starter_runtime(starter_config: BotConfig) -> Runtime:
    return build_runtime(starter_config)


@pytest_asyncio.fixture
async def meeting(bot_config: BotConfig, runtime: Runtime, clips: list[ClipMedia]) -> AsyncIterator[Meeting]:
    async with _meeting(bot_config, runtime, clips) as m:
        yield m


@pytest_asyncio.fixture
async def starter_meeting(
    starter_config: BotConfig, starter_runtime: Runtime, clips: list[ClipMedia]
) -> AsyncIterator[Meeting]:
    async with _meeting(starter_config, starter_runtime, clips) as m:
        yield m


@contextlib.asynccontextmanager
async def _meeting(bot_config: BotConfig, runtime: Runtime, clips: list[ClipMedia]) -> AsyncIterator[Meeting]:
    use_loopback_ice()
    secret = secrets.token_bytes(32)
    server = SignalingServer(secret)
    await server.start("127.0.0.1", 0)
    service = BotService(bot_config)
    await service.start_http()
    await service.load(runtime)
    room, host_token = await create_room(server.url, "e2e")
    bot_token = await mint_invite(server.url, room, host_token, "bot")
    session = await SignalingClient.connect(server.ws_url, room, bot_token, "bot", "Hoovik Bot", "bot")
    m = Meeting(secret, server, service, room, host_token, clips)
    m.bot_task = asyncio.create_task(service.run_session(session))
    try:
        yield m
    finally:
        for sim in m.participants:
            await sim.stop()
        if m.bot_task is not None:
            m.bot_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await m.bot_task
        await service.stop()
        await server.stop()
