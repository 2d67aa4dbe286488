from __future__ import annotations

import json
from typing import Any

import pytest

from signaling.messages import (
    AnswerFrom,
    AnswerTo,
    CandidateFrom,
    CandidateTo,
    ErrorMessage,
    Join,
    Joined,
    Leave,
    Left,
    MediaAnnounce,
    MediaUpdate,
    OfferFrom,
    OfferTo,
    ParticipantInfo,
    Ping,
    Pong,
    ProtocolError,
    ResultFrom,
    ResultTo,
    Welcome,
    parse_client_message,
    parse_server_message,
    to_json,
)

CAND = {
    "candidate": "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host",
    "sdpMid": "0",
    "sdpMLineIndex": 0,
}


def raw(**fields: Any) -> str:
    return json.dumps(fields)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            raw(type="join", room="r1", participantId="p1", name="Ann", role="participant", token="t"),
            Join(room="r1", role="participant", token="t", participant_id="p1", name="Ann"),
        ),
        (raw(type="join", room="r1", role="bot", token="t"), Join(room="r1", role="bot", token="t")),
        (raw(type="media", mic=True, camera=False), MediaAnnounce(mic=True, camera=False)),
        (raw(type="offer", to="p2", sdp="v=0"), OfferTo(to="p2", sdp="v=0")),
        (raw(type="answer", to="p2", sdp="v=0"), AnswerTo(to="p2", sdp="v=0")),
        (raw(type="candidate", to="p2", candidate=CAND), CandidateTo(to="p2", candidate=CAND)),
        (raw(type="candidate", to="p2", candidate=None), CandidateTo(to="p2", candidate=None)),
        (raw(type="result", to="p2", payload={"v": 1}), ResultTo(to="p2", payload={"v": 1})),
        (raw(type="leave"), Leave()),
        (raw(type="ping", extra="ignored"), Ping()),
    ],
)
def test_client_messages_parse(text: str, expected: object) -> None:
    assert parse_client_message(text) == expected
    assert parse_client_message(text.encode()) == expected


def test_candidate_keeps_only_the_browser_fields() -> None:
    cand = {**CAND, "usernameFragment": "abcd", "junk": 1}
    msg = parse_client_message(raw(type="candidate", to="p", candidate=cand))
    assert isinstance(msg, CandidateTo)
    assert msg.candidate == {**CAND, "usernameFragment": "abcd"}


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{not json", "bad_json"),
        ('{"type": "ping", "x": NaN}', "bad_json"),
        ('{"type": "ping", "x": 1e999}', "bad_json"),
        ("[" * 100_000 + "]" * 100_000, "bad_json"),
        ("[1, 2]", "bad_message"),
        (raw(kind="ping"), "bad_message"),
        (raw(type=5), "bad_message"),
        (raw(type="dance"), "unknown_type"),
        (raw(type="welcome", room="r"), "unknown_type"),
        (raw(type="offer", to="p"), "missing_field"),
        (raw(type="join", room="r", role="host"), "missing_field"),
        (raw(type="offer", to="p", sdp=""), "bad_field"),
        (raw(type="offer", to="bad id!", sdp="v=0"), "bad_field"),
        (raw(type="offer", to="x" * 129, sdp="v=0"), "bad_field"),
        (raw(type="media", mic=1, camera=False), "bad_field"),
        (raw(type="join", room="r", role="admin", token="t"), "bad_field"),
        (raw(type="join", room="r", role="host", token="t", name="n" * 129), "bad_field"),
        (raw(type="result", to="p", payload=[1]), "bad_field"),
        (raw(type="candidate", to="p", candidate="candidate:1"), "bad_field"),
        (raw(type="candidate", to="p", candidate={"candidate": "c"}), "bad_field"),
        (raw(type="candidate", to="p", candidate={**CAND, "sdpMLineIndex": True}), "bad_field"),
        (raw(type="candidate", to="p", candidate={**CAND, "sdpMLineIndex": -1}), "bad_field"),
    ],
)
def test_bad_client_messages(text: str, code: str) -> None:
    with pytest.raises(ProtocolError) as err:
        parse_client_message(text)
    assert err.value.code == code


def test_size_limit_counts_utf8_bytes() -> None:
    text = json.dumps({"type": "offer", "to": "p", "sdp": "é" * 600}, ensure_ascii=False)
    assert len(text) < 1000 < len(text.encode())  # 600 characters, 1200 bytes of SDP
    with pytest.raises(ProtocolError) as err:
        parse_client_message(text, max_bytes=1000)
    assert err.value.code == "too_large"
    assert isinstance(parse_client_message(text, max_bytes=2000), OfferTo)


def test_default_limit_admits_a_large_sdp_and_refuses_more() -> None:
    big = "a" * (250 * 1024)
    assert isinstance(parse_client_message(raw(type="offer", to="p", sdp=big)), OfferTo)
    with pytest.raises(ProtocolError) as err:
        parse_client_message(raw(type="offer", to="p", sdp=big + "a" * 8 * 1024))
    assert err.value.code == "too_large"


SERVER_MESSAGES = [
    Welcome(
        room="r",
        participant_id="me",
        role="bot",
        participants=(
            ParticipantInfo("h", "Host", "host", True, False),
            ParticipantInfo("p", "", "participant"),
        ),
    ),
    Welcome(room="r", participant_id="me", role="host"),
    Joined(ParticipantInfo("p", "P", "participant", False, True)),
    Left("p"),
    MediaUpdate("p", True, True),
    OfferFrom(from_="p", sdp="v=0"),
    AnswerFrom(from_="p", sdp="v=0"),
    CandidateFrom(from_="p", candidate=CAND),
    CandidateFrom(from_="p", candidate=None),
    ResultFrom(from_="bot", about="p", payload={"emotion": "joy", "p": [0.5]}),
    ErrorMessage("unknown_peer", "no such peer"),
    Pong(),
]


@pytest.mark.parametrize("msg", SERVER_MESSAGES, ids=lambda m: type(m).__name__)
def test_server_messages_roundtrip(msg: Any) -> None:
    assert parse_server_message(to_json(msg)) == msg


def test_wire_names_are_camel_case_and_from() -> None:
    assert json.loads(to_json(ResultFrom(from_="b", about="p", payload={}))) == {
        "type": "result",
        "from": "b",
        "about": "p",
        "payload": {},
    }
    assert json.loads(to_json(Joined(ParticipantInfo("p", "P", "bot")))) == {
        "type": "joined",
        "participant": {"participantId": "p", "name": "P", "role": "bot", "mic": False, "camera": False},
    }


def test_client_messages_roundtrip_through_to_json() -> None:
    for msg in [
        Join(room="r", role="host", token="t", participant_id="h", name="H"),
        MediaAnnounce(True, False),
        OfferTo("p", "v=0"),
        CandidateTo("p", CAND),
        ResultTo("p", {"a": 1}),
        Leave(),
        Ping(),
    ]:
        assert parse_client_message(to_json(msg)) == msg


def test_to_json_is_ascii_even_for_lone_surrogates() -> None:
    msg = parse_client_message('{"type":"join","room":"r","role":"host","token":"t","name":"\\ud800"}')
    assert isinstance(msg, Join)
    to_json(Joined(ParticipantInfo("p", msg.name, "host"))).encode("ascii")
