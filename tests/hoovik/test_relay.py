"""The test relay itself follows Hoovik's backend semantics (spec 1.2-1.4); the bot tests rely on it."""

from __future__ import annotations

import aiohttp
from hoovik_browser import RawMember, wait_until
from hoovik_relay import ERR_FULL, ERR_INVALID_CODE, ERR_NO_ROOM, HoovikRelay


async def joined(relay: HoovikRelay, code: str, user_id: str | None, name: str = "Guest") -> RawMember:
    m = RawMember(relay.url, code, user_id, name)
    await m.join()
    await m.joined()
    return m


async def test_join_reply_order_and_payloads(relay: HoovikRelay) -> None:
    code = relay.create_room()
    alice = await joined(relay, code, "u-alice", "Alice")
    bob = await joined(relay, code, "u-bob", "Bob")
    try:
        await wait_until(
            lambda: bob.of("participants-updated") and len(alice.of("participants-updated")[-1][0]) == 2, "updates"
        )
        assert bob.names()[:3] == ["existing-participants", "assigned-role", "chat-history"]
        assert bob.of("existing-participants")[0] == (
            [{"id": alice.sid, "meta": {"name": "Alice", "userId": "u-alice"}, "polite": False}],
        )
        assert bob.of("assigned-role")[0] == ({"polite": True},)
        assert alice.of("assigned-role")[0] == ({"polite": False},)
        assert alice.of("user-joined") == [
            ({"id": bob.sid, "meta": {"name": "Bob", "userId": "u-bob"}, "polite": True},)
        ]
        everyone = bob.of("participants-updated")[-1][0]
        assert sorted(e["id"] for e in everyone) == sorted([alice.sid, bob.sid])
        assert all(set(e) == {"id", "meta"} for e in everyone)
        # userId falls back to the socket id; meta is stored as given plus a sanitised name.
        carol = RawMember(relay.url, code, None)
        await carol.join(meta={"name": "<i>Carol</i>", "extra": 1})
        await carol.joined()
        assert relay.entries(code)[carol.sid]["meta"] == {"name": "Carol", "extra": 1}
        await carol.close()
    finally:
        await alice.close()
        await bob.close()


async def test_state_broadcast_signal_relay_and_leaving(relay: HoovikRelay) -> None:
    code, other = relay.create_room(), relay.create_room()
    alice = await joined(relay, code, "u-alice")
    bob = await joined(relay, code, "u-bob")
    eve = await joined(relay, other, "u-eve")
    outsider = RawMember(relay.url, code, "u-out")
    await outsider.connect()
    try:
        await alice.emit("update-participant-state", {"muted": True, "video": False})
        await alice.emit("update-participant-state", {"video": True})
        await wait_until(lambda: len(bob.of("update-participant-state")) == 2, "state broadcasts")
        expected = [({"peerId": alice.sid, "muted": True},)] * 2
        assert bob.of("update-participant-state") == expected
        assert alice.of("update-participant-state") == expected  # the sender too
        assert "video" not in relay.entries(code)["u-alice"]["meta"]

        await alice.emit("signal", (bob.sid, '{"description":{"type":"offer","sdp":"v=0"}}'))
        await alice.emit("signal", (eve.sid, "x"))  # another meeting
        await alice.emit("signal", ("nobody", "x"))
        await outsider.emit("signal", (bob.sid, "x"))  # never joined
        await wait_until(lambda: len(relay.rejected_signals) == 3, "rejections")
        assert bob.of("signal") == [(alice.sid, '{"description":{"type":"offer","sdp":"v=0"}}')]
        assert eve.of("signal") == []

        bob_sid = bob.sid
        await bob.emit("leave-call", code)
        await wait_until(lambda: alice.of("user-left"), "user-left")
        assert alice.of("user-left") == [(bob_sid,)]
        alice_sid = alice.sid
        await alice.close()
        await wait_until(lambda: (alice_sid,) in bob.of("user-left") or not relay.entries(code), "disconnect path")
        assert relay.entries(code) == {}
    finally:
        for m in (alice, bob, eve, outsider):
            await m.close()


async def test_same_user_id_replaces_the_old_socket_without_user_left(relay: HoovikRelay) -> None:
    code = relay.create_room()
    alice = await joined(relay, code, "u-alice")
    bob = await joined(relay, code, "u-bob")
    old_sid = bob.sid
    bob2 = await joined(relay, code, "u-bob")
    try:
        await wait_until(lambda: not bob.client.connected, "old socket disconnected")
        assert bob.disconnect_reasons == ["server disconnect"]
        await wait_until(lambda: len(alice.of("user-joined")) == 2, "second user-joined")
        await wait_until(
            lambda: any(bob2.sid in [e["id"] for e in a[0]] for a in alice.of("participants-updated")), "update"
        )
        assert alice.of("user-left") == []
        assert relay.entries(code)["u-bob"]["socketId"] == bob2.sid
        assert old_sid not in relay.store.state[code]
        last = alice.of("participants-updated")[-1][0]
        assert sorted(e["id"] for e in last) == sorted([alice.sid, bob2.sid])
    finally:
        for m in (alice, bob, bob2):
            await m.close()


async def test_join_errors_and_rest(relay: HoovikRelay) -> None:
    code = relay.create_room()
    relay.max_participants = 1
    m = RawMember(relay.url, code, "u-x")
    await m.join(code="a!")
    await m.join(code="NOPE0000")
    await m.join(code=f" {code.lower()} ")
    other = RawMember(relay.url, code, "u-y")
    await other.join()
    await other.joined()
    try:
        await wait_until(lambda: len(m.of("error")) == 2 and m.of("existing-participants"), "replies")
        assert m.of("error") == [(ERR_INVALID_CODE,), (ERR_NO_ROOM,)]
        assert other.of("error") == [(ERR_FULL,)]
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{relay.url}/api/v1/rooms", json={"hostName": "Host"}) as resp:
                assert resp.status == 201
                body = await resp.json()
            assert body["message"] == "Room created successfully" and len(body["roomCode"]) == 8
            assert len(body["hostSecret"]) == 64
            async with http.get(f"{relay.url}/api/v1/rooms/{body['roomCode'].lower()}") as resp:
                assert resp.status == 200
            async with http.get(f"{relay.url}/api/v1/rooms/NOPE") as resp:
                assert resp.status == 404 and (await resp.json()) == {"error": "Room not found"}
    finally:
        await m.close()
        await other.close()
