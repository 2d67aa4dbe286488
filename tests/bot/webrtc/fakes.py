"""In-memory fakes for the WebRTC layer's collaborators: a signaling session, a data channel, an engine.

They let ``bot/webrtc/participant.py``'s negotiation and ``bot/webrtc/router.py``'s routing rule run
in unit tests with no server, no network and no models.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from signaling.base import Disconnected, Event, PeerInfo


@dataclass
class FakeChannel:
    """A data channel: records what is sent while ``readyState`` is open."""

    readyState: str = "open"
    bufferedAmount: int = 0
    sent: list[str] = field(default_factory=list)

    def send(self, data: str) -> None:
        if self.readyState != "open":
            raise RuntimeError("channel closed")
        self.sent.append(data)


class FakeSession:
    """A :class:`signaling.base.SignalingSession` fed by the test (``push``) that records what is sent.

    ``result_relay_reaches_hosts``: whether ``send_result`` also reaches the room's hosts (the native
    server's relay does, Hoovik's does not).
    """

    def __init__(
        self,
        self_id: str = "bot",
        peers: Mapping[str, PeerInfo] | None = None,
        *,
        result_relay_reaches_hosts: bool = False,
    ) -> None:
        self._self_id = self_id
        self._peers: dict[str, PeerInfo] = dict(peers or {})
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self.result_relay_reaches_hosts = result_relay_reaches_hosts
        self.connected = True
        self.offers: list[tuple[str, str]] = []
        self.answers: list[tuple[str, str]] = []
        self.candidates: list[tuple[str, dict[str, Any] | None]] = []
        self.results: list[tuple[str, dict[str, Any]]] = []
        self.rejections: list[tuple[str, str]] = []
        self.media: list[tuple[bool, bool]] = []
        self.closed = False
        self.sent = asyncio.Event()
        """Set whenever something is sent (tests wait on it, then clear it)."""

    @property
    def self_id(self) -> str:
        return self._self_id

    @property
    def peers(self) -> Mapping[str, PeerInfo]:
        return self._peers

    def add_peer(self, info: PeerInfo) -> None:
        self._peers[info.peer_id] = info

    def push(self, event: Event) -> None:
        self._queue.put_nowait(event)

    async def events(self) -> AsyncIterator[Event]:
        while True:
            event = await self._queue.get()
            yield event
            if isinstance(event, Disconnected):
                return

    def _note(self) -> None:
        self.sent.set()

    async def send_offer(self, peer_id: str, sdp: str) -> None:
        self.offers.append((peer_id, sdp))
        self._note()

    async def send_answer(self, peer_id: str, sdp: str) -> None:
        self.answers.append((peer_id, sdp))
        self._note()

    async def send_candidate(self, peer_id: str, candidate: dict[str, Any] | None) -> None:
        self.candidates.append((peer_id, candidate))
        self._note()

    async def send_result(self, peer_id: str, payload: dict[str, Any]) -> None:
        self.results.append((peer_id, payload))
        self._note()

    async def send_offer_rejected(self, peer_id: str, reason: str) -> None:
        self.rejections.append((peer_id, reason))
        self._note()

    async def announce_media(self, mic: bool, camera: bool) -> None:
        self.media.append((mic, camera))

    async def close(self) -> None:
        self.closed = True


@dataclass
class FakeEngine:
    """What the participant asks of the engine, recorded (no models, no pools)."""

    participants: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def add_participant(
        self, pid: str, name: str = "", role: str = "participant", mic: bool = True, camera: bool = True
    ) -> None:
        self.participants[pid] = {"name": name, "role": role, "mic": mic, "camera": camera}
        self.calls.append(("add", pid, role))

    def remove_participant(self, pid: str) -> None:
        self.participants.pop(pid, None)
        self.calls.append(("remove", pid))

    def set_media(self, pid: str, mic: bool | None = None, camera: bool | None = None) -> None:
        self.calls.append(("media", pid, mic, camera))

    def set_analysis(self, pid: str, enabled: bool) -> None:
        self.calls.append(("analysis", pid, enabled))

    def on_video_frame(self, pid: str, frame: Any, media_time: float) -> None:
        self.calls.append(("video", pid))

    def on_audio(self, pid: str, samples: Any, media_time: float) -> None:
        self.calls.append(("audio", pid))
