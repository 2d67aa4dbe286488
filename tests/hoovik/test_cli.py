"""``hoovik-bot join --hoovik URL --meeting CODE`` as a real process against the relay."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys

import aiohttp
import pytest
from hoovik_browser import HostUI, wait_until
from hoovik_relay import HoovikRelay

from bot.cli import main
from bot.config import BotConfig


def test_join_needs_a_complete_target(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOOVIK_BOT_TOKEN", raising=False)
    assert main(["join", "--hoovik", "http://127.0.0.1:1"]) == 2
    assert "--hoovik URL and --meeting CODE go together" in capsys.readouterr().err
    assert main(["join"]) == 2
    assert "give --signaling" in capsys.readouterr().err


async def test_cli_joins_serves_the_emotion_endpoint_and_leaves_on_sigterm(
    relay: HoovikRelay, hoovik_bot_config: BotConfig
) -> None:
    code = relay.create_room()
    models = hoovik_bot_config.models
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "join",
        "--hoovik",
        relay.url,
        "--meeting",
        code.lower(),
        "--participant-id",
        "bot-cli",
        "--http-port",
        "0",
        "--bundle",
        models.bundle,
        "--audio-model",
        models.audio_model,
        "--face-asset",
        models.face_asset,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None

        async def read_until(pattern: str) -> re.Match[str]:
            while True:
                raw = await proc.stdout.readline()  # type: ignore[union-attr]
                if not raw:
                    raise AssertionError("hoovik-bot exited early:\n" + "".join(lines))
                lines.append(raw.decode(errors="replace"))
                found = re.search(pattern, lines[-1])
                if found:
                    return found

        port = int((await asyncio.wait_for(read_until(r"telemetry on http://[^:]+:(\d+)/stats"), 120)).group(1))
        await asyncio.wait_for(read_until(rf"joined Hoovik meeting {code} as bot-cli"), 120)
        entry = relay.entries(code)["bot-cli"]
        assert entry["meta"] == {"name": "Hoovik Bot", "userId": "bot-cli", "bot": True, "muted": True, "video": False}
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/ready") as resp:
            assert resp.status == 200
        ui = HostUI(f"http://127.0.0.1:{port}", "u-someone")
        await ui.connect()
        await wait_until(lambda: ui.status, "server.status from the CLI's endpoint")
        await ui.close()

        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
        assert "bot-cli" not in relay.entries(code)
        assert relay.events_of("leave-call")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
