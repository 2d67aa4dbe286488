"""Cluster fixtures: a real ``redis-server`` (Debian's, started here on a free port in a temporary
folder, never the system service), a real native signaling server, the dispatcher and the workers
as real processes (``hoovik-bot dispatch`` / ``hoovik-bot worker`` through ``run_worker.py``, which
adds loopback ICE), and simulated participants streaming shared clips over real aiortc.

Redis runs with ``appendonly yes`` and ``appendfsync always``: the deployment docs ask for AOF, and
the "Redis restarts" test SIGKILLs it and starts it again on the same port and folder.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

sys.path.insert(0, str(Path(__file__).parent))

from cluster_env import CLIPS, Cluster, RedisServer, free_port

from bot.contrib.clips import ClipMedia, load_clip
from bot.webrtc.ice import use_loopback_ice
from signaling.server import SignalingServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisServer(free_port(), folder)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="session")
def cluster_clips(media_dir: Path) -> list[ClipMedia]:
    # Small frames: three workers, their decoders and the encoders here share two cores.
    return [load_clip(media_dir / name, width=160, height=120, max_s=4.0) for name in CLIPS]


@pytest_asyncio.fixture
async def cluster(
    redis_server: RedisServer, tmp_path: Path, face_asset: Path, cluster_clips: list[ClipMedia]
) -> AsyncIterator[Cluster]:
    use_loopback_ice()
    server = SignalingServer(secrets.token_bytes(32))
    await server.start("127.0.0.1", 0)
    c = Cluster(redis_server, server, {}, tmp_path, face_asset, cluster_clips)
    c.http = aiohttp.ClientSession()
    try:
        yield c
    finally:
        await c.close()
