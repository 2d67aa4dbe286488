"""The native signaling protocol: every message as a dataclass, one parser per direction.

Both the server and :mod:`signaling.client` go through this module, so a message shape is defined
exactly once. Wire names are camelCase (``participantId``); Python fields are snake_case and
``from_`` stands for ``from``. Unknown extra fields are ignored (forward compatibility); missing or
mistyped known fields are a :class:`ProtocolError`. ``docs/signaling.md`` lists every shape.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass
from enum import IntEnum, StrEnum
from typing import Any, ClassVar, TypeAlias, cast

from signaling.base import ROLES, Role

DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024
_OMIT_DEFAULT = {"omit_default": True}
"""Field metadata: leave the field off the wire while it has its default. Optional fields added to
an existing message this way keep every message that does not use them byte-for-byte unchanged."""
MAX_ID_CHARS = 128
MAX_NAME_CHARS = 128
MAX_TOKEN_CHARS = 4096
MAX_CANDIDATE_CHARS = 2048
MAX_REASON_CHARS = 512
RESUME_KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
"""The secret ``welcome`` hands a joiner; presenting it again lets that joiner replace its own
stale connection (docs/signaling.md, "Replacement semantics")."""
ID_PATTERN = re.compile(rf"^[A-Za-z0-9_.:@-]{{1,{MAX_ID_CHARS}}}$")
"""Participant and room ids: short, printable, safe in logs and URLs."""


class ErrorCode(StrEnum):
    """``code`` values of the server's ``error`` message (and of :class:`ProtocolError`)."""

    BAD_JSON = "bad_json"
    BAD_MESSAGE = "bad_message"
    UNKNOWN_TYPE = "unknown_type"
    MISSING_FIELD = "missing_field"
    BAD_FIELD = "bad_field"
    TOO_LARGE = "too_large"
    JOIN_REQUIRED = "join_required"
    ALREADY_JOINED = "already_joined"
    JOIN_TIMEOUT = "join_timeout"
    TOKEN_MALFORMED = "token_malformed"
    TOKEN_BAD_SIGNATURE = "token_bad_signature"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_WRONG_ROOM = "token_wrong_room"
    ROLE_MISMATCH = "role_mismatch"
    PARTICIPANT_MISMATCH = "participant_mismatch"
    ID_TAKEN = "id_taken"
    ROOM_NOT_FOUND = "room_not_found"
    ROOM_FULL = "room_full"
    UNKNOWN_PEER = "unknown_peer"
    FORBIDDEN = "forbidden"
    REPLACED = "replaced"
    SHUTTING_DOWN = "shutting_down"
    ID_RESERVED = "id_reserved"
    RATE_LIMITED = "rate_limited"
    OFFER_REJECTED = "offer_rejected"


class CloseCode(IntEnum):
    """WebSocket close codes the server uses; the close reason text is the matching error code."""

    NORMAL = 1000
    GOING_AWAY = 1001
    TOO_LARGE = 1009
    BAD_TOKEN = 4001
    FORBIDDEN = 4003
    ROOM_NOT_FOUND = 4004
    JOIN_TIMEOUT = 4008
    REPLACED = 4009
    ROOM_FULL = 4029
    RATE_LIMITED = 4030


class ProtocolError(Exception):
    """A message could not be accepted; ``code`` is an :class:`ErrorCode` value."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


# --- shared pieces ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParticipantInfo:
    """One member as listed in ``welcome`` and ``joined``."""

    participant_id: str
    name: str
    role: Role
    mic: bool = False
    camera: bool = False
    analysis: bool = field(default=True, metadata=_OMIT_DEFAULT)
    """False when the member opted out of emotion analysis (on the wire only then)."""


# --- client → server ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Join:
    """Must be the first message. ``participant_id`` None lets the server pick (the token's ``pid``
    if it has one, else a random id); ``welcome`` tells the joiner which."""

    TYPE: ClassVar[str] = "join"
    room: str
    role: Role
    token: str
    participant_id: str | None = None
    name: str = ""
    resume_key: str | None = field(default=None, metadata=_OMIT_DEFAULT)
    """The ``resumeKey`` of an earlier ``welcome``: proves this is the same person reconnecting."""


@dataclass(frozen=True, slots=True)
class MediaAnnounce:
    """The sender's own microphone/camera state, broadcast to the room as ``media``.

    ``analysis`` (optional, default true) is whether the sender agrees to emotion analysis; false
    tells hosts' pages to show "not analysed" and tells the bot to stop (docs/signaling.md)."""

    TYPE: ClassVar[str] = "media"
    mic: bool
    camera: bool
    analysis: bool = field(default=True, metadata=_OMIT_DEFAULT)


@dataclass(frozen=True, slots=True)
class OfferTo:
    TYPE: ClassVar[str] = "offer"
    to: str
    sdp: str


@dataclass(frozen=True, slots=True)
class AnswerTo:
    TYPE: ClassVar[str] = "answer"
    to: str
    sdp: str


@dataclass(frozen=True, slots=True)
class CandidateTo:
    """``candidate`` is ``RTCIceCandidate.toJSON()``; ``None`` signals end-of-candidates."""

    TYPE: ClassVar[str] = "candidate"
    to: str
    candidate: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class ResultTo:
    """Bot-only fallback route for a result about participant ``to`` (no data channel yet)."""

    TYPE: ClassVar[str] = "result"
    to: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class OfferRejectedTo:
    """Tell the member ``to`` that its offer was refused and why (e.g. the bot cannot decode it).
    The server delivers it as ``error {code: "offer_rejected", from, message: reason}``."""

    TYPE: ClassVar[str] = "offer_rejected"
    to: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Leave:
    TYPE: ClassVar[str] = "leave"


@dataclass(frozen=True, slots=True)
class Ping:
    TYPE: ClassVar[str] = "ping"


# --- server → client ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Welcome:
    """Sent to a joiner; ``participants`` lists the *other* members present."""

    TYPE: ClassVar[str] = "welcome"
    room: str
    participant_id: str
    role: Role
    participants: tuple[ParticipantInfo, ...] = ()
    resume_key: str | None = field(default=None, metadata=_OMIT_DEFAULT)
    """A per-connection secret: send it in a later ``join`` to replace this connection."""


@dataclass(frozen=True, slots=True)
class Joined:
    TYPE: ClassVar[str] = "joined"
    participant: ParticipantInfo


@dataclass(frozen=True, slots=True)
class Left:
    TYPE: ClassVar[str] = "left"
    participant_id: str


@dataclass(frozen=True, slots=True)
class MediaUpdate:
    TYPE: ClassVar[str] = "media"
    participant_id: str
    mic: bool
    camera: bool
    analysis: bool = field(default=True, metadata=_OMIT_DEFAULT)


@dataclass(frozen=True, slots=True)
class OfferFrom:
    TYPE: ClassVar[str] = "offer"
    from_: str
    sdp: str


@dataclass(frozen=True, slots=True)
class AnswerFrom:
    TYPE: ClassVar[str] = "answer"
    from_: str
    sdp: str


@dataclass(frozen=True, slots=True)
class CandidateFrom:
    TYPE: ClassVar[str] = "candidate"
    from_: str
    candidate: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class ResultFrom:
    TYPE: ClassVar[str] = "result"
    from_: str
    about: str
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    TYPE: ClassVar[str] = "error"
    code: str
    message: str
    from_: str | None = field(default=None, metadata=_OMIT_DEFAULT)
    """Set when another member caused the error (``offer_rejected``); absent for the server's own."""


@dataclass(frozen=True, slots=True)
class Pong:
    TYPE: ClassVar[str] = "pong"


ClientMessage: TypeAlias = (
    Join | MediaAnnounce | OfferTo | AnswerTo | CandidateTo | ResultTo | OfferRejectedTo | Leave | Ping
)
ServerMessage: TypeAlias = (
    Welcome | Joined | Left | MediaUpdate | OfferFrom | AnswerFrom | CandidateFrom | ResultFrom | ErrorMessage | Pong
)
Message: TypeAlias = ClientMessage | ServerMessage


# --- encoding -----------------------------------------------------------------------------------


def _wire_name(name: str) -> str:
    head, *rest = name.rstrip("_").split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _to_wire(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {
            _wire_name(f.name): _to_wire(getattr(value, f.name))
            for f in fields(value)
            if not (f.metadata.get("omit_default") and getattr(value, f.name) == f.default)
        }
    if isinstance(value, list | tuple):
        return [_to_wire(v) for v in value]
    return value


def to_json(msg: Message) -> str:
    """Encode a message. ASCII-only output, so a stray lone surrogate can never break a send."""
    return json.dumps({"type": msg.TYPE, **_to_wire(msg)}, separators=(",", ":"), allow_nan=False)


# --- decoding helpers ---------------------------------------------------------------------------

_Obj: TypeAlias = dict[str, Any]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _load(raw: str | bytes, max_bytes: int) -> _Obj:
    size = len(raw) if isinstance(raw, bytes | bytearray) else len(raw.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"message is {size} bytes; the limit is {max_bytes}")
    try:
        data = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(ErrorCode.BAD_JSON, "message is not valid JSON") from exc
    if not isinstance(data, dict):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "message must be a JSON object")
    if not isinstance(data.get("type"), str):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "message needs a string 'type'")
    return data


def _get(o: _Obj, key: str) -> Any:
    if key not in o:
        raise ProtocolError(ErrorCode.MISSING_FIELD, f"{o['type']}: '{key}' is required")
    return o[key]


def _bad(o: _Obj, key: str, why: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_FIELD, f"{o['type']}: '{key}' {why}")


def _str(o: _Obj, key: str, max_chars: int, *, empty_ok: bool = False) -> str:
    value = _get(o, key)
    if not isinstance(value, str):
        raise _bad(o, key, "must be a string")
    if len(value) > max_chars or (not value and not empty_ok):
        raise _bad(o, key, f"must be {'0' if empty_ok else '1'}..{max_chars} characters")
    return value


def _id(o: _Obj, key: str) -> str:
    value = _get(o, key)
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise _bad(o, key, f"must be 1..{MAX_ID_CHARS} characters of [A-Za-z0-9_.:@-]")
    return value


def _opt_id(o: _Obj, key: str) -> str | None:
    return None if o.get(key) is None else _id(o, key)


def _opt_resume_key(o: _Obj, key: str) -> str | None:
    value = o.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not RESUME_KEY_PATTERN.match(value):
        raise _bad(o, key, "must be 16..64 characters of [A-Za-z0-9_-]")
    return value


def _opt_str(o: _Obj, key: str, max_chars: int) -> str:
    return "" if o.get(key) is None else _str(o, key, max_chars, empty_ok=True)


def _opt_name(o: _Obj, key: str) -> str:
    return "" if o.get(key) is None else _str(o, key, MAX_NAME_CHARS, empty_ok=True)


def _bool(o: _Obj, key: str) -> bool:
    value = _get(o, key)
    if not isinstance(value, bool):
        raise _bad(o, key, "must be true or false")
    return value


def _opt_bool(o: _Obj, key: str, default: bool) -> bool:
    return default if o.get(key) is None else _bool(o, key)


def _role(o: _Obj, key: str) -> Role:
    value = _get(o, key)
    if value not in ROLES:
        raise _bad(o, key, f"must be one of {', '.join(ROLES)}")
    return cast(Role, value)


def _object(o: _Obj, key: str) -> dict[str, Any]:
    value = _get(o, key)
    if not isinstance(value, dict):
        raise _bad(o, key, "must be a JSON object")
    return value


def _candidate(o: _Obj, key: str) -> dict[str, Any] | None:
    """Validate the browser's ``RTCIceCandidate.toJSON()`` shape and keep only its known keys."""
    value = _get(o, key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _bad(o, key, "must be an object or null")
    line = value.get("candidate")
    mid = value.get("sdpMid")
    index = value.get("sdpMLineIndex")
    ufrag = value.get("usernameFragment")
    if not isinstance(line, str) or len(line) > MAX_CANDIDATE_CHARS:
        raise _bad(o, key, f"needs a string 'candidate' of at most {MAX_CANDIDATE_CHARS} characters")
    if mid is not None and not (isinstance(mid, str) and len(mid) <= MAX_ID_CHARS):
        raise _bad(o, key, "has a bad 'sdpMid'")
    if index is not None and not (isinstance(index, int) and not isinstance(index, bool) and index >= 0):
        raise _bad(o, key, "has a bad 'sdpMLineIndex'")
    if mid is None and index is None:
        raise _bad(o, key, "needs 'sdpMid' or 'sdpMLineIndex'")
    if ufrag is not None and not (isinstance(ufrag, str) and len(ufrag) <= MAX_ID_CHARS):
        raise _bad(o, key, "has a bad 'usernameFragment'")
    out: dict[str, Any] = {"candidate": line, "sdpMid": mid, "sdpMLineIndex": index}
    if ufrag is not None:
        out["usernameFragment"] = ufrag
    return out


def _sdp(o: _Obj, key: str) -> str:
    # The message-size limit already bounds it; the only extra rule is "not empty".
    return _str(o, key, DEFAULT_MAX_MESSAGE_BYTES * 4)


def _participant_from(value: Any, label: str) -> ParticipantInfo:
    if not isinstance(value, dict):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"{label} must be a JSON object")
    p = {**value, "type": label}
    return ParticipantInfo(
        participant_id=_id(p, "participantId"),
        name=_opt_name(p, "name"),
        role=_role(p, "role"),
        mic=_bool(p, "mic"),
        camera=_bool(p, "camera"),
        analysis=_opt_bool(p, "analysis", True),
    )


def _participant(o: _Obj, key: str) -> ParticipantInfo:
    return _participant_from(_get(o, key), f"{o['type']}.{key}")


def _participants(o: _Obj, key: str) -> tuple[ParticipantInfo, ...]:
    value = _get(o, key)
    if not isinstance(value, list):
        raise _bad(o, key, "must be a list")
    return tuple(_participant_from(item, f"{o['type']}.{key}[{i}]") for i, item in enumerate(value))


# --- parsers ------------------------------------------------------------------------------------

_CLIENT: dict[str, Callable[[_Obj], ClientMessage]] = {
    "join": lambda o: Join(
        room=_id(o, "room"),
        role=_role(o, "role"),
        token=_str(o, "token", MAX_TOKEN_CHARS),
        participant_id=_opt_id(o, "participantId"),
        name=_opt_name(o, "name"),
        resume_key=_opt_resume_key(o, "resumeKey"),
    ),
    "media": lambda o: MediaAnnounce(
        mic=_bool(o, "mic"), camera=_bool(o, "camera"), analysis=_opt_bool(o, "analysis", True)
    ),
    "offer": lambda o: OfferTo(to=_id(o, "to"), sdp=_sdp(o, "sdp")),
    "answer": lambda o: AnswerTo(to=_id(o, "to"), sdp=_sdp(o, "sdp")),
    "candidate": lambda o: CandidateTo(to=_id(o, "to"), candidate=_candidate(o, "candidate")),
    "result": lambda o: ResultTo(to=_id(o, "to"), payload=_object(o, "payload")),
    "offer_rejected": lambda o: OfferRejectedTo(to=_id(o, "to"), reason=_opt_str(o, "reason", MAX_REASON_CHARS)),
    "leave": lambda o: Leave(),
    "ping": lambda o: Ping(),
}

_SERVER: dict[str, Callable[[_Obj], ServerMessage]] = {
    "welcome": lambda o: Welcome(
        room=_id(o, "room"),
        participant_id=_id(o, "participantId"),
        role=_role(o, "role"),
        participants=_participants(o, "participants"),
        resume_key=_opt_resume_key(o, "resumeKey"),
    ),
    "joined": lambda o: Joined(participant=_participant(o, "participant")),
    "left": lambda o: Left(participant_id=_id(o, "participantId")),
    "media": lambda o: MediaUpdate(
        participant_id=_id(o, "participantId"),
        mic=_bool(o, "mic"),
        camera=_bool(o, "camera"),
        analysis=_opt_bool(o, "analysis", True),
    ),
    "offer": lambda o: OfferFrom(from_=_id(o, "from"), sdp=_sdp(o, "sdp")),
    "answer": lambda o: AnswerFrom(from_=_id(o, "from"), sdp=_sdp(o, "sdp")),
    "candidate": lambda o: CandidateFrom(from_=_id(o, "from"), candidate=_candidate(o, "candidate")),
    "result": lambda o: ResultFrom(from_=_id(o, "from"), about=_id(o, "about"), payload=_object(o, "payload")),
    "error": lambda o: ErrorMessage(
        code=_str(o, "code", 64), message=_str(o, "message", 1024, empty_ok=True), from_=_opt_id(o, "from")
    ),
    "pong": lambda o: Pong(),
}


def parse_client_message(raw: str | bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> ClientMessage:
    """Decode and validate one client→server message or raise :class:`ProtocolError`."""
    o = _load(raw, max_bytes)
    parser = _CLIENT.get(o["type"])
    if parser is None:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {o['type'][:40]!r}")
    return parser(o)


def parse_server_message(raw: str | bytes, max_bytes: int = 4 * DEFAULT_MAX_MESSAGE_BYTES) -> ServerMessage:
    """Decode and validate one server→client message (the client's side of the same schema)."""
    o = _load(raw, max_bytes)
    parser = _SERVER.get(o["type"])
    if parser is None:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {o['type'][:40]!r}")
    return parser(o)
