"""Result routing: results about X go to X and to the room's hosts, and to no one else.

Each participant's own data channel is the primary route. A participant without an open data
channel receives its results through signaling instead. Hosts get everyone's results on their own
channels — except results that go through the signaling relay while it reaches the hosts too (the
native server forwards a ``result`` to its subject *and* every host): those the hosts already get
from the server, so sending them on the hosts' channels as well would deliver each result twice.
Every recipient gets every result exactly once.

The router is the only owner of the result route: the participant tells it who is in the room
(:meth:`ResultRouter.set_role`, :meth:`ResultRouter.forget`) and which data channel belongs to whom
(:meth:`ResultRouter.attach`, :meth:`ResultRouter.detach`); the service hands it every result
(:meth:`ResultRouter.route`). The signaling fallback is the session's own ``send_result``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Protocol

from bot.pipeline.results import EmotionResult
from signaling.base import SignalingSession

log = logging.getLogger(__name__)

# A data channel whose send buffer is beyond this is not keeping up; results are dropped for it.
MAX_BUFFERED_BYTES = 256 * 1024


class Channel(Protocol):
    readyState: str
    bufferedAmount: int

    def send(self, data: str) -> None: ...


class ResultRouter:
    """Decides who receives a result (its subject and the hosts) and delivers it.

    ``session`` (optional: tests may route to channels only) is the signaling session used as the
    fallback route for a subject without an open data channel.
    """

    def __init__(self, session: SignalingSession | None = None) -> None:
        self._session = session
        self._channels: dict[str, Channel] = {}
        self.roles: dict[str, str] = {}
        self.sent = 0
        self.fallback_sent = 0
        self.dropped = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def set_role(self, pid: str, role: str) -> None:
        self.roles[pid] = role

    def attach(self, pid: str, channel: Channel) -> None:
        self._channels[pid] = channel

    def detach(self, pid: str) -> None:
        """``pid``'s connection is gone (it may come back with a new one); its role stays."""
        self._channels.pop(pid, None)

    def forget(self, pid: str) -> None:
        self._channels.pop(pid, None)
        self.roles.pop(pid, None)

    def has_channel(self, pid: str) -> bool:
        return pid in self._channels

    def _fallback_reaches_hosts(self) -> bool:
        """Whether ``send_result`` reaches the room's hosts now (native server: yes, while connected)."""
        session = self._session
        return (
            session is not None
            and bool(getattr(session, "result_relay_reaches_hosts", False))
            and bool(getattr(session, "connected", True))
        )

    def hosts(self) -> list[str]:
        return [pid for pid, role in self.roles.items() if role == "host"]

    def route(self, result: EmotionResult) -> None:
        """Deliver one result to its subject and to every host; never to anyone else."""
        message = result.to_message()
        text = json.dumps(message, separators=(",", ":"))
        subject = result.participant_id
        hosts = [h for h in self.hosts() if h != subject]
        if not self._send_channel(subject, text):
            self._send_fallback(subject, message)
            if self._fallback_reaches_hosts():
                return  # the relay hands it to every host too
        for pid in hosts:
            self._send_channel(pid, text)

    def _send_channel(self, pid: str, text: str) -> bool:
        channel = self._channels.get(pid)
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
        if self._session is None:
            self.dropped += 1
            return
        task = asyncio.ensure_future(self._session.send_result(pid, message))
        self._tasks.add(task)
        task.add_done_callback(self._done)
        self.fallback_sent += 1

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("fallback result delivery failed: %s", task.exception())
