"""The job model: what a bot request says, how it is checked, and the states a job goes through.

A request names one meeting: the native signaling URL, room and bot token, or a Hoovik backend URL
and meeting code. It is validated here, once, by the dispatcher (a bad request is a 400 with the
reason and never reaches the queue); workers trust what is stored. The token travels inside the
job hash in Redis, so Redis must be as private as the signaling secret (docs/scale.md).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from yarl import URL

from signaling.messages import ID_PATTERN, MAX_TOKEN_CHARS

# States. ``queued`` → ``starting`` (a worker holds the lease, the bot is joining) → ``running`` →
# ``exited`` | ``failed``. ``stopping``: DELETE was asked and the worker is leaving. A failover
# goes back through ``starting`` on the new worker.
QUEUED = "queued"
STARTING = "starting"
RUNNING = "running"
STOPPING = "stopping"
EXITED = "exited"
FAILED = "failed"
TERMINAL_STATES = frozenset({EXITED, FAILED})
ACTIVE_STATES = frozenset({QUEUED, STARTING, RUNNING, STOPPING})

MAX_NAME_CHARS = 64
MAX_BUNDLE_CHARS = 256
MAX_PARTICIPANTS_HINT = 1000


class BadRequest(ValueError):
    """A bot request the dispatcher refuses (HTTP 400); the message says why."""


@dataclass(frozen=True)
class JobSpec:
    """One meeting the bot should be in. Exactly one of (``signaling``, ``room``, ``token``) and
    (``hoovik``, ``meeting``) is set."""

    signaling: str | None = None
    room: str | None = None
    token: str | None = None
    hoovik: str | None = None
    meeting: str | None = None
    participant_id: str = "hoovik-bot"
    """The bot's identity in the meeting. It stays the same across failovers, so that the signaling
    server replaces a dead worker's ghost instead of keeping two bots."""
    name: str = "Hoovik Bot"
    bundle: str | None = None
    """A bundle the workers know (``None``: the worker's default)."""
    max_participants: int | None = None
    """A hint: how many participants the meeting expects (workers count it against their load)."""

    @property
    def native(self) -> bool:
        return self.signaling is not None

    @property
    def meeting_key(self) -> str:
        """One key per meeting: a second active job for the same meeting is refused (409)."""
        if self.native:
            u = URL(self.signaling or "")
            return f"native|{u.host}:{u.port}|{self.room}"
        u = URL(self.hoovik or "")
        return f"hoovik|{u.host}:{u.port}|{self.meeting}"

    def describe(self) -> str:
        if self.native:
            return f"room {self.room} on {self.signaling}"
        return f"Hoovik meeting {self.meeting} on {self.hoovik}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        data = json.loads(text)
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__ if k in data})

    def public(self) -> dict[str, Any]:
        """The spec without the token (what GET /bots/{id} shows)."""
        out: dict[str, Any] = {"participantId": self.participant_id, "name": self.name}
        if self.native:
            out.update(signaling=self.signaling, room=self.room)
        else:
            out.update(hoovik=self.hoovik, meeting=self.meeting)
        if self.bundle is not None:
            out["bundle"] = self.bundle
        if self.max_participants is not None:
            out["maxParticipants"] = self.max_participants
        return out


_FIELDS = {"signaling", "room", "token", "hoovik", "meeting", "participantId", "name", "bundle", "maxParticipants"}


def _str(body: dict[str, Any], key: str, limit: int) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{key}: expected a non-empty string")
    if len(value) > limit:
        raise BadRequest(f"{key}: longer than {limit} characters")
    return value.strip()


def _url(value: str, key: str, schemes: tuple[str, ...]) -> str:
    try:
        u = URL(value)
    except ValueError as exc:
        raise BadRequest(f"{key}: not a URL: {value!r}") from exc
    if u.scheme not in schemes or not u.host:
        raise BadRequest(f"{key}: expected {'/'.join(schemes)}://host[:port]…, got {value!r}")
    return value


def parse_request(body: Any) -> JobSpec:
    """Check a ``POST /bots`` body; raise :class:`BadRequest` with the reason."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}")
    signaling = _str(body, "signaling", 2048)
    room = _str(body, "room", 128)
    token = _str(body, "token", MAX_TOKEN_CHARS)
    hoovik = _str(body, "hoovik", 2048)
    meeting = _str(body, "meeting", 64)
    pid = _str(body, "participantId", 128) or "hoovik-bot"
    name = _str(body, "name", MAX_NAME_CHARS) or "Hoovik Bot"
    bundle = _str(body, "bundle", MAX_BUNDLE_CHARS)
    hint = body.get("maxParticipants")
    if hint is not None and (
        not isinstance(hint, int) or isinstance(hint, bool) or not 1 <= hint <= MAX_PARTICIPANTS_HINT
    ):
        raise BadRequest(f"maxParticipants: expected an integer in 1..{MAX_PARTICIPANTS_HINT}")
    if not ID_PATTERN.match(pid):
        raise BadRequest(f"participantId: 1-128 characters of A-Z a-z 0-9 _ . : @ -, got {pid!r}")
    native = signaling is not None or room is not None or token is not None
    if native and (hoovik is not None or meeting is not None):
        raise BadRequest("give either signaling/room/token or hoovik/meeting, not both")
    if native:
        if not (signaling and room and token):
            raise BadRequest("a native meeting needs signaling, room and token")
        _url(signaling, "signaling", ("ws", "wss", "http", "https"))
        if not ID_PATTERN.match(room):
            raise BadRequest(f"room: not a room id: {room!r}")
    elif hoovik is not None or meeting is not None:
        if not (hoovik and meeting):
            raise BadRequest("a Hoovik meeting needs hoovik and meeting")
        _url(hoovik, "hoovik", ("http", "https"))
        from signaling.base import JoinRejected
        from signaling.hoovik import normalize_meeting_code

        try:
            meeting = normalize_meeting_code(meeting)
        except JoinRejected as exc:
            raise BadRequest(f"meeting: {meeting!r} is not a meeting code (3-32 of A-Z 0-9 -)") from exc
    else:
        raise BadRequest("say which meeting: signaling/room/token, or hoovik/meeting")
    return JobSpec(
        signaling=signaling,
        room=room,
        token=token,
        hoovik=hoovik,
        meeting=meeting,
        participant_id=pid,
        name=name,
        bundle=bundle,
        max_participants=hint,
    )
