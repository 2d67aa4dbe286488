"""Fixtures for the signaling tests: a real server on 127.0.0.1:0, real clients, loopback ICE.

Nothing here sleeps to wait for something; waits are "until X happens", bounded by a generous
timeout only so that a bug fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import pytest
from aiortc import RTCConfiguration

from signaling.base import Event, Role
from signaling.client import SignalingClient, create_room, mint_invite
from signaling.server import ServerConfig, SignalingServer

SECRET = b"hoovik-test-secret-0123456789-padded-to-32+"
WAIT_S = 10.0  # upper bound for "until" waits; never a timing assertion

E = TypeVar("E")


@pytest.fixture
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> RTCConfiguration:
    """Let two aiortc peers in this process reach each other over 127.0.0.1 only.

    aioice gathers host candidates from ``aioice.ice.get_host_addresses`` (called by
    ``Connection.gather_candidates``) and deliberately skips 127.0.0.1; this sandbox has no other
    interface, so no candidate pair would ever form. Patching that one module-level function to
    return ``["127.0.0.1"]`` gives every peer a loopback host candidate. ``iceServers=[]`` keeps
    aiortc from trying the default public STUN server (no network here, and it would only delay
    gathering). Use the returned configuration for every ``RTCPeerConnection`` in the test.
    """
    import aioice.ice

    def loopback_only(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return ["127.0.0.1"] if use_ipv4 else []

    monkeypatch.setattr(aioice.ice, "get_host_addresses", loopback_only)
    return RTCConfiguration(iceServers=[])


ServerFactory = Callable[..., Awaitable[SignalingServer]]


@pytest.fixture
async def make_server() -> AsyncIterator[ServerFactory]:
    """Start servers with config overrides; all are stopped at teardown."""
    started: list[SignalingServer] = []

    async def make(**overrides: Any) -> SignalingServer:
        # Empty rooms are freed at once so that tests can observe it without waiting.
        config = dataclasses.replace(ServerConfig(empty_room_grace_s=0.0), **overrides)
        server = SignalingServer(SECRET, config)
        await server.start("127.0.0.1", 0)
        started.append(server)
        return server

    yield make
    for server in started:
        await server.stop()


@pytest.fixture
async def server(make_server: ServerFactory) -> SignalingServer:
    return await make_server()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@dataclasses.dataclass
class Room:
    server: SignalingServer
    id: str
    host_token: str

    async def invite(self, role: Role, participant_id: str | None = None, ttl_s: float = 600.0) -> str:
        return await mint_invite(self.server.url, self.id, self.host_token, role, ttl_s, participant_id)


RoomFactory = Callable[..., Awaitable[Room]]


@pytest.fixture
def make_room() -> RoomFactory:
    async def make(server: SignalingServer, name: str = "test room") -> Room:
        room_id, host_token = await create_room(server.url, name)
        return Room(server, room_id, host_token)

    return make


@pytest.fixture
async def room(server: SignalingServer, make_room: RoomFactory) -> Room:
    return await make_room(server)


JoinFactory = Callable[..., Awaitable[SignalingClient]]


@pytest.fixture
async def join() -> AsyncIterator[JoinFactory]:
    """``await join(room, pid, role)`` → a connected client (host role uses the host token).

    ``resume_key`` is an earlier client's :attr:`SignalingClient.resume_key` (to replace it)."""
    clients: list[SignalingClient] = []

    async def connect(
        room: Room,
        pid: str | None,
        role: Role = "participant",
        *,
        token: str | None = None,
        name: str = "",
        resume_key: str | None = None,
    ) -> SignalingClient:
        if token is None:
            token = room.host_token if role == "host" else await room.invite(role)
        client = await SignalingClient.connect(
            room.server.ws_url, room.id, token, pid, name or str(pid), role, resume_key=resume_key
        )
        clients.append(client)
        return client

    yield connect
    for client in clients:
        await client.close()


class EventReader:
    """Reads one client's events in order; ``expect`` skips nothing silently unless asked to."""

    def __init__(self) -> None:
        self._iters: dict[int, AsyncIterator[Event]] = {}

    def _iter(self, client: SignalingClient) -> AsyncIterator[Event]:
        key = id(client)
        if key not in self._iters:
            self._iters[key] = client.events()
        return self._iters[key]

    async def next(self, client: SignalingClient) -> Event:
        async with asyncio.timeout(WAIT_S):
            return await anext(self._iter(client))

    async def expect(self, client: SignalingClient, kind: type[E], *, skip: tuple[type, ...] = ()) -> E:
        """The next event must be a ``kind`` (events of the ``skip`` types are passed over)."""
        while True:
            event = await self.next(client)
            if isinstance(event, kind):
                return event
            if not isinstance(event, skip):
                raise AssertionError(f"expected {kind.__name__}, got {event!r}")


@pytest.fixture
def events() -> EventReader:
    return EventReader()


async def wait_until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_S):
        while not predicate():
            await asyncio.sleep(0.01)


@pytest.fixture
def until() -> Callable[[Callable[[], bool]], Awaitable[None]]:
    """``await until(lambda: cond)``: poll a condition, failing (not hanging) if it never holds."""
    return wait_until
