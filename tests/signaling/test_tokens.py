from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from signaling.tokens import TokenError, TokenSigner

SECRET = b"0123456789abcdef-token-tests"


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(payload: object, secret: bytes = SECRET) -> str:
    """A correctly signed token around an arbitrary payload (to reach the payload checks)."""
    body = b64(json.dumps(payload).encode()) if not isinstance(payload, bytes) else b64(payload)
    sig = hmac.new(secret, body.encode(), hashlib.sha256).digest()
    return f"{body}.{b64(sig)}"


def test_roundtrip_carries_every_claim() -> None:
    clock = Clock()
    signer = TokenSigner(SECRET, clock=clock)
    claims = signer.verify(signer.mint("room1", "participant", 60, pid="alice"), room="room1")
    assert (claims.room, claims.role, claims.pid) == ("room1", "participant", "alice")
    assert claims.iat == int(clock.now)
    assert claims.exp == claims.iat + 60
    assert claims.jti


def test_pid_is_optional_and_jti_unique() -> None:
    signer = TokenSigner(SECRET)
    a, b = signer.mint("r", "bot", 10), signer.mint("r", "bot", 10)
    assert a != b
    assert signer.verify(a).pid is None
    assert signer.verify(a).jti != signer.verify(b).jti


def test_format_is_payload_dot_signature() -> None:
    token = TokenSigner(SECRET).mint("r", "host", 10)
    body, sig = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert set(payload) == {"room", "role", "exp", "iat", "jti"}
    assert len(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))) == 32


def test_expired() -> None:
    clock = Clock()
    signer = TokenSigner(SECRET, clock=clock)
    token = signer.mint("r", "participant", 30)
    clock.now += 29
    signer.verify(token)
    clock.now += 1
    with pytest.raises(TokenError) as err:
        signer.verify(token)
    assert err.value.code == "expired"


def test_wrong_room() -> None:
    signer = TokenSigner(SECRET)
    with pytest.raises(TokenError) as err:
        signer.verify(signer.mint("a", "participant", 30), room="b")
    assert err.value.code == "wrong_room"


def test_other_secret_is_bad_signature() -> None:
    token = TokenSigner(b"another-secret-of-16+bytes").mint("r", "host", 30)
    with pytest.raises(TokenError) as err:
        TokenSigner(SECRET).verify(token)
    assert err.value.code == "bad_signature"


def test_tampered_payload_is_bad_signature() -> None:
    signer = TokenSigner(SECRET)
    body, sig = signer.mint("r", "participant", 30).split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["role"] = "host"
    with pytest.raises(TokenError) as err:
        signer.verify(f"{b64(json.dumps(payload).encode())}.{sig}")
    assert err.value.code == "bad_signature"


def test_tampered_signature_is_bad_signature() -> None:
    signer = TokenSigner(SECRET)
    body, sig = signer.mint("r", "participant", 30).split(".")
    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
    with pytest.raises(TokenError) as err:
        signer.verify(f"{body}.{flipped}")
    assert err.value.code == "bad_signature"


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b.c", "a b.c", "ab+c.def", "abc.d/ef", "abc.def=", "x" * 5000 + ".y"],
)
def test_malformed_shapes(token: str) -> None:
    with pytest.raises(TokenError) as err:
        TokenSigner(SECRET).verify(token)
    assert err.value.code == "malformed"


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        [1, 2],
        {"room": "r", "role": "king", "exp": 2**40, "iat": 0, "jti": "j"},
        {"room": "r", "role": "host", "exp": True, "iat": 0, "jti": "j"},
        {"role": "host", "exp": 2**40, "iat": 0, "jti": "j"},
        {"room": "r", "role": "host", "exp": 2**40, "iat": 0, "jti": "j", "pid": 5},
    ],
)
def test_signed_but_malformed_payload(payload: object) -> None:
    with pytest.raises(TokenError) as err:
        TokenSigner(SECRET).verify(signed(payload))
    assert err.value.code == "malformed"


def test_constructor_and_mint_guard_their_inputs() -> None:
    with pytest.raises(ValueError):
        TokenSigner(b"short")
    signer = TokenSigner(SECRET)
    with pytest.raises(ValueError):
        signer.mint("r", "king", 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        signer.mint("r", "host", 0)
    with pytest.raises(ValueError):
        signer.mint("", "host", 10)
