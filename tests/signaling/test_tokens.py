from __future__ import annotations

import base64
import hashlib
import hmac
import json

import jwt
import pytest

from signaling import hub
from signaling.tokens import TokenError, TokenSigner

SECRET = b"0123456789abcdef-token-tests-padded-to-32+"


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(payload: object, secret: bytes = SECRET, header: dict[str, str] | None = None) -> str:
    """A correctly HS256-signed JWT around an arbitrary payload (to reach the payload checks)."""
    head = b64(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(payload).encode()) if not isinstance(payload, bytes) else b64(payload)
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


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


def test_format_is_a_standard_hs256_jwt() -> None:
    token = TokenSigner(SECRET).mint("r", "host", 10)
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    # Any JWT library verifies it with the server's secret...
    payload = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert set(payload) == {"room", "role", "exp", "iat", "jti"}
    # ...and a token minted by another tool with the same claims is admitted.
    other = jwt.encode({**payload, "jti": "minted-elsewhere"}, SECRET, algorithm="HS256")
    assert TokenSigner(SECRET).verify(other).jti == "minted-elsewhere"


def test_alg_none_and_other_algorithms_are_refused() -> None:
    claims = {"room": "r", "role": "host", "exp": 2**40, "iat": 0, "jti": "j"}
    unsigned = jwt.encode(claims, None, algorithm="none")
    with pytest.raises(TokenError) as err:
        TokenSigner(SECRET).verify(unsigned)
    assert err.value.code == "malformed"
    hs512 = jwt.encode(claims, SECRET * 3, algorithm="HS512")
    with pytest.raises(TokenError) as err:
        TokenSigner(SECRET).verify(hs512)
    assert err.value.code == "malformed"


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
    token = TokenSigner(b"another-secret-of-32+bytes-for-hs256").mint("r", "host", 30)
    with pytest.raises(TokenError) as err:
        TokenSigner(SECRET).verify(token)
    assert err.value.code == "bad_signature"


def test_tampered_payload_is_bad_signature() -> None:
    signer = TokenSigner(SECRET)
    head, body, sig = signer.mint("r", "participant", 30).split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["role"] = "host"
    with pytest.raises(TokenError) as err:
        signer.verify(f"{head}.{b64(json.dumps(payload).encode())}.{sig}")
    assert err.value.code == "bad_signature"


def test_tampered_signature_is_bad_signature() -> None:
    signer = TokenSigner(SECRET)
    head, body, sig = signer.mint("r", "participant", 30).split(".")
    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
    with pytest.raises(TokenError) as err:
        signer.verify(f"{head}.{body}.{flipped}")
    assert err.value.code == "bad_signature"


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b", "a.b.c", "a b.c.d", "ab+c.def.g", "abc.d/ef.g", "abc.def.g=", "x" * 5000 + ".y.z"],
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


def test_room_ids_can_be_passed_on_a_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    # token_urlsafe starts with "-" once in 64 draws; argparse then reads the id as an option.
    draws = iter(["-starts-with-a-dash", "Ab3_fine"])
    monkeypatch.setattr(hub.secrets, "token_urlsafe", lambda n: next(draws))
    assert hub.room_id() == "Ab3_fine"
    monkeypatch.undo()
    ids = {hub.room_id() for _ in range(2000)}
    assert len(ids) == 2000 and not any(i.startswith("-") for i in ids)
    assert all(len(i) == 12 for i in ids)
