"""How ``hoovik-bot join`` ends: a message on stderr and a distinct non-zero exit code for every
abnormal end (docs/signaling.md, "Exit codes of hoovik-bot join"), and arguments checked before
the models load. Against real servers: the CLI as a process, and :class:`ReconnectingClient` in
process for the ends that need no models.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_resilience import REPO, ServerProcess, free_port

from bot import cli
from bot.config import BotConfig
from signaling.base import Disconnected, JoinRejected
from signaling.client import ReconnectingClient, ReconnectPolicy, create_room, mint_invite
from signaling.server import SignalingServer

FAST = ReconnectPolicy(delay_s=0.1, delay_max_s=0.5, give_up_s=20.0)


async def last_event(session: ReconnectingClient, timeout: float = 30.0) -> Disconnected:
    async def drain() -> Disconnected:
        async for ev in session.events():
            if isinstance(ev, Disconnected):
                return ev
        raise AssertionError("events ended without Disconnected")

    return await asyncio.wait_for(drain(), timeout)


def test_join_checks_its_arguments_before_loading_models(capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (["join", "--hoovik", "ftp://x", "--meeting", "ABC-123"], "--hoovik: expected http/https"),
        (["join", "--hoovik", "http://h:1", "--meeting", "no spaces!"], "--meeting"),
        (["join", "--hoovik", "http://h:1"], "go together"),
        (["join", "--signaling", "tcp://h:1", "--room", "r1", "--token", "t"], "--signaling: expected"),
        (["join", "--signaling", "ws://h:1/ws", "--room", "bad room", "--token", "t"], "--room"),
        (["join", "--signaling", "ws://h:1/ws", "--room", "r1"], "a token"),
        (["join", "--signaling", "ws://h:1/ws", "--room", "r1", "--token-file", "/nonexistent"], "--token-file"),
        (["join", "--hoovik", "http://h:1", "--meeting", "ABC", "--give-up-s", "0"], "--give-up-s"),
    ]
    for argv, message in cases:
        started = time.monotonic()
        assert cli.main(argv) == cli.EXIT_USAGE, argv
        err = capsys.readouterr().err
        assert message in err, (argv, err)
        assert time.monotonic() - started < 5.0  # nothing was loaded


def test_token_from_file_or_environment_and_a_warning_for_the_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = cli.build_parser()
    base = ["join", "--signaling", "ws://h:1/ws", "--room", "r1"]
    monkeypatch.delenv("HOOVIK_BOT_TOKEN", raising=False)
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    assert cli.join_token(parser.parse_args([*base, "--token-file", str(token_file), "--token", "x"])) == "from-file"
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("HOOVIK_BOT_TOKEN", "from-env")
    assert cli.join_token(parser.parse_args(base)) == "from-env"
    assert capsys.readouterr().err == ""
    monkeypatch.delenv("HOOVIK_BOT_TOKEN")
    assert cli.join_token(parser.parse_args([*base, "--token", "on-the-command-line"])) == "on-the-command-line"
    err = capsys.readouterr().err
    assert "warning" in err and "ps" in err and "--token-file" in err


def test_every_abnormal_end_has_its_own_non_zero_code() -> None:
    seen = {}
    for reason in ("room_not_found", "replaced", "unreachable", "token_expired", "id_taken", "slow_consumer"):
        code, message = cli.join_exit(reason)
        assert code != 0 and message, reason
        seen[reason] = code
    assert seen["room_not_found"] == cli.EXIT_MEETING_GONE
    assert seen["replaced"] == cli.EXIT_REPLACED
    assert seen["unreachable"] == cli.EXIT_UNREACHABLE
    assert seen["token_expired"] == seen["id_taken"] == cli.EXIT_REFUSED
    assert len({cli.EXIT_MEETING_GONE, cli.EXIT_REPLACED, cli.EXIT_UNREACHABLE, cli.EXIT_REFUSED, cli.EXIT_LOST}) == 5
    assert cli.join_exit("client_closed") == (0, None)


async def test_session_ends_replaced_bad_token_and_unreachable_against_a_real_server() -> None:
    server = SignalingServer(secrets.token_bytes(32))
    await server.start("127.0.0.1", 0)
    try:
        room, host = await create_room(server.url, "ends")
        # Bad token: refused at once, never retried.
        with pytest.raises(JoinRejected) as refused:
            await ReconnectingClient.connect(server.ws_url, room, "garbage", "bot-a", "", "bot", policy=FAST)
        assert cli.join_exit(refused.value.code)[0] == cli.EXIT_REFUSED
        # Replaced by another bot: the first session ends with "replaced" instead of fighting back.
        first = await ReconnectingClient.connect(
            server.ws_url, room, await mint_invite(server.url, room, host, "bot"), "bot-a", "", "bot", policy=FAST
        )
        second = await ReconnectingClient.connect(
            server.ws_url, room, await mint_invite(server.url, room, host, "bot"), "bot-a", "", "bot", policy=FAST
        )
        assert (await last_event(first)).reason == "replaced"
        assert second.connected and server.hub.member_ids(room) == ["bot-a"]
        # Unreachable: the server goes away for good; after give_up_s the session ends.
        quick = ReconnectPolicy(delay_s=0.1, delay_max_s=0.3, give_up_s=1.5)
        third = await ReconnectingClient.connect(
            server.ws_url, room, await mint_invite(server.url, room, host, "bot"), "bot-b", "", "bot", policy=quick
        )
        await second.close()
    finally:
        await server.stop()
    started = time.monotonic()
    assert (await last_event(third)).reason == "unreachable"
    assert 1.0 < time.monotonic() - started < 10.0
    assert third.counters.get("disconnects") == 1


async def test_cli_exits_non_zero_with_a_message_when_the_meeting_is_gone(
    bot_config: BotConfig, tmp_path: Path
) -> None:
    """A bot in a room whose server restarts without its rooms (no --state): it rejoins, learns the
    room is gone, and exits 4 with a message, not 0 in silence."""
    server = ServerProcess(free_port(), secrets.token_hex(32), tmp_path)
    await server.start()
    room, host = await create_room(server.url, "gone")
    token_file = tmp_path / "bot-token"
    token_file.write_text(await mint_invite(server.url, room, host, "bot"))
    models = bot_config.models
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HOOVIK_MODELS_OFFLINE": "1"}
    env.pop("HOOVIK_BOT_TOKEN", None)
    out_path, err_path = tmp_path / "bot.out", tmp_path / "bot.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.cli",
            "join",
            "--signaling",
            server.ws_url,
            "--room",
            room,
            "--token-file",
            str(token_file),
            "--give-up-s",
            "60",
            "--http-port",
            "0",
            "--bundle",
            models.bundle,
            "--audio-model",
            models.audio_model,
            "--face-asset",
            models.face_asset,
            stdout=out,
            stderr=err,
            cwd=REPO,
            env=env,
        )
    try:
        deadline = time.monotonic() + 180
        while f"joined room {room}" not in out_path.read_text(errors="replace"):
            assert proc.returncode is None, err_path.read_text(errors="replace")
            assert time.monotonic() < deadline, out_path.read_text(errors="replace")
            await asyncio.sleep(0.2)
        await server.kill()
        await server.start()  # same port and secret, but no state: the room is unknown now
        code = await asyncio.wait_for(proc.wait(), 60)
        stderr = err_path.read_text(errors="replace")
        assert code == cli.EXIT_MEETING_GONE, stderr
        assert "the meeting is gone" in stderr
        assert "visible" not in stderr  # no --token on the command line, no warning
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await server.kill()
