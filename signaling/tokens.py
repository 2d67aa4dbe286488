"""Signed, self-contained room tokens: standard JWTs (HS256, RFC 7519) made and checked with PyJWT.

Claims: ``room``, ``role``, optional ``pid`` (a fixed participant id), ``exp``, ``iat``, ``jti``.
Any JWT library in any language can mint or verify them with the server's secret (the
``--secret`` of ``hoovik-bot serve``, as raw bytes). The server keeps no token table: anything it
needs to admit a joiner is inside the signed payload, so tokens survive a restart of the process as
long as the secret does. ``jti`` makes every token unique (and greppable in logs). Only HS256 is
accepted (no ``alg: none``, no algorithm confusion).

A token authorises *joining*; an established connection is not cut when its token later expires.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, cast

import jwt

from signaling.base import ROLES, Role

TokenErrorCode: TypeAlias = Literal["malformed", "bad_signature", "expired", "wrong_room"]

MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key at least as long as the hash
MAX_TOKEN_CHARS = 4096
ALGORITHM = "HS256"


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


class TokenSigner:
    """Mints and verifies tokens with one shared secret.

    ``clock`` returns epoch seconds; tests inject one to exercise expiry without sleeping.
    """

    def __init__(self, secret: bytes, *, clock: Callable[[], float] = time.time) -> None:
        if not isinstance(secret, bytes | bytearray) or len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"token secret must be at least {MIN_SECRET_BYTES} bytes")
        self._secret = bytes(secret)
        self._clock = clock

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
        return jwt.encode(payload, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str, room: str | None = None) -> TokenClaims:
        """Check signature, shape, expiry and (when given) the room; return the claims.

        PyJWT checks the HS256 signature (in constant time) before the claims are used; expiry is
        checked here against the injectable clock rather than PyJWT's own ``time.time()``.
        """
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
            raise TokenError("malformed", "expected a JWT (three dot-separated parts)")
        try:
            data = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False, "verify_aud": False},
            )
        except jwt.InvalidSignatureError as exc:
            raise TokenError("bad_signature") from exc
        except jwt.InvalidAlgorithmError as exc:
            raise TokenError("malformed", "only HS256 tokens are accepted") from exc
        except jwt.PyJWTError as exc:
            raise TokenError("malformed", str(exc)) from exc
        claims = _parse_claims(data)
        if claims.exp <= self._clock():
            raise TokenError("expired", f"expired at {claims.exp}")
        if room is not None and claims.room != room:
            raise TokenError("wrong_room", "token is for another room")
        return claims


def _parse_claims(data: Any) -> TokenClaims:
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
