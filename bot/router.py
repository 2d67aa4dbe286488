"""Result routing: results about X go to X and to the room's hosts, and to no one else.

Each participant's own data channel is the primary route. A participant without an open data
channel receives its results through signaling instead (the server relays them to that participant
and its hosts only). Hosts get everyone's results on their own channels.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from bot.results import EmotionResult

log = logging.getLogger(__name__)

# A data channel whose send buffer is beyond this is not keeping up; results are dropped for it.
MAX_BUFFERED_BYTES = 256 * 1024


class Channel(Protocol):
    readyState: str
    bufferedAmount: int

    def send(self, data: str) -> None: ...


class ResultRouter:
    def __init__(self, fallback: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None) -> None:
        self.channels: dict[str, Channel] = {}
        self.roles: dict[str, str] = {}
        self._fallback = fallback
        self.sent = 0
        self.fallback_sent = 0
        self.dropped = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def set_role(self, pid: str, role: str) -> None:
        self.roles[pid] = role

    def attach(self, pid: str, channel: Channel) -> None:
        self.channels[pid] = channel

    def forget(self, pid: str) -> None:
        self.channels.pop(pid, None)
        self.roles.pop(pid, None)

    def hosts(self) -> list[str]:
        return [pid for pid, role in self.roles.items() if role == "host"]

    def route(self, result: EmotionResult) -> None:
        """Deliver one result to its subject and to every host; never to anyone else."""
        message = result.to_message()
        text = json.dumps(message, separators=(",", ":"))
        subject = result.participant_id
        targets = [subject, *[h for h in self.hosts() if h != subject]]
        for pid in targets:
            if not self._send_channel(pid, text) and pid == subject:
                self._send_fallback(pid, message)

    def _send_channel(self, pid: str, text: str) -> bool:
        channel = self.channels.get(pid)
        if channel is None or channel.readyState != "open":
            return False
        if channel.bufferedAmount > MAX_BUFFERED_BYTES:
            self.dropped += 1
            return True
        try:
            channel.send(text)
        except Exception as exc:
            log.warning("data channel send to %s failed: %s", pid, exc)
            return False
        self.sent += 1
        return True

    def _send_fallback(self, pid: str, message: dict[str, Any]) -> None:
        if self._fallback is None:
            self.dropped += 1
            return
        task = asyncio.ensure_future(self._fallback(pid, message))
        self._tasks.add(task)
        task.add_done_callback(self._done)
        self.fallback_sent += 1

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("fallback result delivery failed: %s", task.exception())
