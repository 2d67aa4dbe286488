"""Result routing: results about X go to X and to the room's hosts, and to no one else.

Each participant's own data channel is the primary route. A participant without an open data
channel receives its results through signaling instead. Hosts get everyone's results on their own
channels — except results that go through the signaling relay while it reaches the hosts too (the
native server forwards a ``result`` to its subject *and* every host): those the hosts already get
from the server, so sending them on the hosts' channels as well would deliver each result twice.
Every recipient gets every result exactly once.
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
    def __init__(
        self,
        fallback: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None,
        fallback_reaches_hosts: Callable[[], bool] | None = None,
    ) -> None:
        self.channels: dict[str, Channel] = {}
        self.roles: dict[str, str] = {}
        self._fallback = fallback
        self._fallback_reaches_hosts = fallback_reaches_hosts or (lambda: False)
        """Whether the fallback relay delivers to the room's hosts as well, right now."""
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
        hosts = [h for h in self.hosts() if h != subject]
        if not self._send_channel(subject, text):
            if self._fallback is not None and self._fallback_reaches_hosts():
                self._send_fallback(subject, message)
                return  # the relay hands it to every host too
            self._send_fallback(subject, message)
        for pid in hosts:
            self._send_channel(pid, text)

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
