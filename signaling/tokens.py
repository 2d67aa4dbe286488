"""Signed, self-contained room tokens.

Format: ``base64url(JSON payload) + "." + base64url(HMAC-SHA256(secret, first part))``, both parts
unpadded. The server keeps no token table: anything it needs to admit a joiner (room, role, an
optional fixed participant id, expiry) is inside the signed payload, so tokens survive a restart of
the process as long as the secret does. ``jti`` makes every token unique (and greppable in logs).

A token authorises *joining*; an established connection is not cut when its token later expires.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, cast

from signaling.base import ROLES, Role

TokenErrorCode: TypeAlias = Literal["malformed", "bad_signature", "expired", "wrong_room"]

MIN_SECRET_BYTES = 16
MAX_TOKEN_CHARS = 4096
_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")


class TokenError(Exception):
    """A token was refused. ``code`` is one of ``malformed``, ``bad_signature``, ``expired``,
    ``wrong_room``; it is safe to show to the client (it says nothing about the secret)."""

    def __init__(self, code: TokenErrorCode, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code: TokenErrorCode = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """The verified payload of a token."""

    room: str
    role: Role
    pid: str | None
    exp: int
    iat: int
    jti: str


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    # Strict alphabet check first: the stdlib decoder would otherwise accept '+', '/' and padding,
    # which would let several spellings of one signature verify.
    if not _B64URL.match(text):
        raise TokenError("malformed", "not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise TokenError("malformed", "not base64url") from exc


class TokenSigner:
    """Mints and verifies tokens with one shared secret.

    ``clock`` returns epoch seconds; tests inject one to exercise expiry without sleeping.
    """

    def __init__(self, secret: bytes, *, clock: Callable[[], float] = time.time) -> None:
        if not isinstance(secret, bytes | bytearray) or len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"token secret must be at least {MIN_SECRET_BYTES} bytes")
        self._secret = bytes(secret)
        self._clock = clock

    def _sign(self, payload_b64: str) -> bytes:
        return hmac.new(self._secret, payload_b64.encode("ascii"), hashlib.sha256).digest()

    def mint(self, room: str, role: Role, ttl_s: float, pid: str | None = None) -> str:
        """Return a token admitting ``role`` to ``room`` for ``ttl_s`` seconds (rounded up)."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        if not room:
            raise ValueError("room must be non-empty")
        if not (ttl_s > 0 and math.isfinite(ttl_s)):
            raise ValueError("ttl_s must be a positive, finite number of seconds")
        iat = int(self._clock())
        payload: dict[str, Any] = {
            "room": room,
            "role": role,
            "exp": iat + math.ceil(ttl_s),
            "iat": iat,
            "jti": secrets.token_urlsafe(12),
        }
        if pid is not None:
            payload["pid"] = pid
        body = _b64encode(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8"))
        return f"{body}.{_b64encode(self._sign(body))}"

    def verify(self, token: str, room: str | None = None) -> TokenClaims:
        """Check signature, shape, expiry and (when given) the room; return the claims.

        The signature is checked, in constant time, before the payload is parsed, so unsigned input
        never reaches the JSON decoder.
        """
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
            raise TokenError("malformed", "expected two dot-separated parts")
        body, sig_text = token.split(".")
        sig = _b64decode(sig_text)
        _b64decode(body)  # shape check before spending a MAC on garbage
        if not hmac.compare_digest(sig, self._sign(body)):
            raise TokenError("bad_signature")
        claims = _parse_claims(_b64decode(body))
        if claims.exp <= self._clock():
            raise TokenError("expired", f"expired at {claims.exp}")
        if room is not None and claims.room != room:
            raise TokenError("wrong_room", "token is for another room")
        return claims


def _parse_claims(raw: bytes) -> TokenClaims:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TokenError("malformed", "payload is not JSON") from exc
    if not isinstance(data, dict):
        raise TokenError("malformed", "payload is not an object")

    def need(key: str, kind: type) -> Any:
        value = data.get(key)
        # bool is an int subclass; a boolean exp/iat is not a timestamp.
        if not isinstance(value, kind) or isinstance(value, bool):
            raise TokenError("malformed", f"bad or missing {key!r}")
        return value

    role = need("role", str)
    if role not in ROLES:
        raise TokenError("malformed", "unknown role")
    pid = data.get("pid")
    if pid is not None and not isinstance(pid, str):
        raise TokenError("malformed", "bad 'pid'")
    return TokenClaims(
        room=need("room", str),
        role=cast(Role, role),
        pid=pid,
        exp=need("exp", int),
        iat=need("iat", int),
        jti=need("jti", str),
    )
