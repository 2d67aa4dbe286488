"""REST endpoints: rooms, invites, room summary, health, CORS."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from signaling.client import SignalingHTTPError, create_room, mint_invite
from signaling.tokens import TokenSigner

SECRET = b"hoovik-test-secret-0123456789-padded-to-32+"  # the conftest's server secret


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_health(server: Any, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{server.url}/health") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["status"] == "ok"
    assert body["rooms"] == 0


async def test_create_room(server: Any, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{server.url}/rooms", json={"name": "Standup"}) as resp:
        assert resp.status == 201
        body = await resp.json()
    assert set(body) >= {"roomId", "hostToken", "joinUrl", "wsUrl"}
    assert body["name"] == "Standup"
    assert body["roomId"] in body["joinUrl"]
    assert body["wsUrl"] == server.ws_url
    claims = TokenSigner(SECRET).verify(body["hostToken"], room=body["roomId"])
    assert claims.role == "host"
    assert server.hub.room_exists(body["roomId"])


async def test_create_room_without_body(server: Any, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{server.url}/rooms") as resp:
        assert resp.status == 201


@pytest.mark.parametrize(
    ("body", "code"), [(b"{nope", "bad_json"), (b"[1]", "bad_json"), (b'{"name": 5}', "bad_field")]
)
async def test_create_room_rejects_bad_bodies(server: Any, http: aiohttp.ClientSession, body: bytes, code: str) -> None:
    async with http.post(f"{server.url}/rooms", data=body) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == code


async def test_room_key_guards_room_creation(make_server: Any) -> None:
    server = await make_server(create_room_key="k-123")
    with pytest.raises(SignalingHTTPError) as err:
        await create_room(server.url, "x")
    assert err.value.status == 401
    room_id, _ = await create_room(server.url, "x", room_key="k-123")
    assert server.hub.room_exists(room_id)


async def test_room_limit(make_server: Any) -> None:
    server = await make_server(max_rooms=1)
    await create_room(server.url)
    with pytest.raises(SignalingHTTPError) as err:
        await create_room(server.url)
    assert (err.value.status, err.value.code) == (503, "too_many_rooms")


async def test_invites(room: Any) -> None:
    signer = TokenSigner(SECRET)
    participant = signer.verify(await room.invite("participant"), room=room.id)
    assert (participant.role, participant.pid) == ("participant", None)
    bot = signer.verify(await room.invite("bot", participant_id="hoovik"), room=room.id)
    assert (bot.role, bot.pid) == ("bot", "hoovik")
    short = signer.verify(await room.invite("participant", ttl_s=5))
    assert short.exp - short.iat == 5


async def test_invite_needs_a_host_token_of_that_room(room: Any, make_room: Any) -> None:
    url = room.server.url
    with pytest.raises(SignalingHTTPError) as err:
        await mint_invite(url, room.id, "", "participant")
    assert err.value.status == 401
    with pytest.raises(SignalingHTTPError) as err:
        await mint_invite(url, room.id, "garbage", "participant")
    assert (err.value.status, err.value.code) == (401, "token_malformed")
    participant_token = await room.invite("participant")
    with pytest.raises(SignalingHTTPError) as err:
        await mint_invite(url, room.id, participant_token, "participant")
    assert (err.value.status, err.value.code) == (403, "forbidden")
    other = await make_room(room.server)
    with pytest.raises(SignalingHTTPError) as err:
        await mint_invite(url, room.id, other.host_token, "participant")
    assert (err.value.status, err.value.code) == (403, "token_wrong_room")


@pytest.mark.parametrize(
    "body",
    [
        {"role": "host"},
        {"role": "admin"},
        {},
        {"role": "bot", "ttlSeconds": 0},
        {"role": "bot", "ttlSeconds": True},
        {"role": "bot", "ttlSeconds": 10**9},
        {"role": "bot", "participantId": "no spaces"},
    ],
)
async def test_invite_rejects_bad_bodies(room: Any, http: aiohttp.ClientSession, body: dict[str, Any]) -> None:
    async with http.post(
        f"{room.server.url}/rooms/{room.id}/invites", json=body, headers=auth(room.host_token)
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == "bad_field"


async def test_room_summary_needs_host(room: Any, http: aiohttp.ClientSession, join: Any) -> None:
    await join(room, "alice", "participant", name="Alice")
    url = f"{room.server.url}/rooms/{room.id}"
    async with http.get(url) as resp:
        assert resp.status == 401
    async with http.get(url, headers=auth(await room.invite("participant"))) as resp:
        assert resp.status == 403
    async with http.get(url, headers=auth(room.host_token)) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["roomId"] == room.id
    assert body["participants"] == [
        {"participantId": "alice", "name": "Alice", "role": "participant", "mic": False, "camera": False}
    ]


async def test_unknown_room_is_404_for_a_valid_token(server: Any, http: aiohttp.ClientSession) -> None:
    token = TokenSigner(SECRET).mint("ghost", "host", 60)
    async with http.get(f"{server.url}/rooms/ghost", headers=auth(token)) as resp:
        assert resp.status == 404
        assert (await resp.json())["error"] == "room_not_found"
    async with http.post(f"{server.url}/rooms/ghost/invites", json={"role": "bot"}, headers=auth(token)) as resp:
        assert resp.status == 404


async def test_cors_only_when_configured(make_server: Any, http: aiohttp.ClientSession) -> None:
    plain = await make_server()
    async with http.post(f"{plain.url}/rooms", headers={"Origin": "https://app.example"}) as resp:
        assert "Access-Control-Allow-Origin" not in resp.headers

    server = await make_server(allow_origins=frozenset({"https://app.example"}))
    async with http.options(
        f"{server.url}/rooms",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    ) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
    async with http.post(f"{server.url}/rooms", headers={"Origin": "https://app.example"}) as resp:
        assert resp.status == 201
        assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
    async with http.post(f"{server.url}/rooms", headers={"Origin": "https://evil.example"}) as resp:
        assert "Access-Control-Allow-Origin" not in resp.headers


async def test_websocket_origin_is_checked_when_configured(make_server: Any, http: aiohttp.ClientSession) -> None:
    server = await make_server(allow_origins=frozenset({"https://app.example"}))
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await http.ws_connect(server.ws_url, headers={"Origin": "https://evil.example"})
    assert err.value.status == 403
    ws = await http.ws_connect(server.ws_url, headers={"Origin": "https://app.example"})
    await ws.close()
    ws = await http.ws_connect(server.ws_url)  # no Origin: not a browser, the token decides
    await ws.close()
