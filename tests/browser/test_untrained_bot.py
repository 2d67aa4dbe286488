"""The bot invited with the command line the landing page shows, running an untrained bundle.

The page must be honest: results that say ``trained: false`` put an "untrained model" warning on
every panel. The bot here is started by hand, exactly as a host would paste the shown command
(plus the model flags), not by the server's launcher.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_env import LaunchBrowser, NetNamespace, Stack, console_log, shoot, wait_until

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def demo_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "demo"
    subprocess.run([str(BIN / "hoovik-bot"), "models", "demo-bundle", "--out", str(out)], check=True, timeout=300)
    return out


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_command_line_bot_with_an_untrained_bundle_is_flagged_on_every_panel(
    stack: Stack,
    netns: NetNamespace,
    launch_browser: LaunchBrowser,
    demo_bundle_dir: Path,
    tiny_wav2vec2_dir: Path,
    face_asset: Path,
    artifacts: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    browser = launch_browser("host")
    host = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    host_log = console_log(host)
    host.goto(stack.page("/"))
    host.fill("#room-name", "Untrained")
    host.click("#create-btn")
    host.wait_for_selector("#links[data-ready=true]")
    host_link, invite_link = host.input_value("#host-link"), host.input_value("#invite-link")
    assignment, *shown = shlex.split(host.input_value("#bot-command"))
    assert assignment.startswith("HOOVIK_BOT_TOKEN=") and shown[:2] == ["hoovik-bot", "join"]
    flags = ["--bundle", str(demo_bundle_dir), "--audio-model", str(tiny_wav2vec2_dir)]
    flags += ["--face-asset", str(face_asset), "--http-port", "0"]
    cmd = [*netns.prefix(), str(BIN / "hoovik-bot"), *shown[1:], *flags]
    env = {**os.environ, "HOOVIK_MODELS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env["HOOVIK_BOT_TOKEN"] = assignment.partition("=")[2]
    with (artifacts / "untrained-bot.log").open("wb") as log:
        processes.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env))

    host.goto(host_link)
    host.fill("#name", "Hana")
    host.click("#join-btn")
    host.wait_for_selector("#conn-signaling[data-state=connected]")
    host_id = host.get_attribute("#call", "data-self")
    guest = browser.new_context().new_page()
    guest.goto(invite_link)
    guest.fill("#name", "Pat")
    guest.click("#join-btn")
    guest.wait_for_selector("#conn-signaling[data-state=connected]")
    guest_id = guest.get_attribute("#call", "data-self")

    def info() -> str:
        return (
            f"console: {host_log[-10:]}; bot: {(artifacts / 'untrained-bot.log').read_text(errors='replace')[-2000:]}"
        )

    # Someone who declines analysis before joining: the bot gets none of their media.
    quiet = browser.new_context().new_page()
    quiet.goto(invite_link)
    quiet.fill("#name", "Quinn")
    quiet.uncheck("#prejoin-analysis")
    quiet.click("#join-btn")
    quiet.wait_for_selector("#conn-bot[data-state=connected]", timeout=180_000)  # the bot may still be loading
    quiet_id = quiet.get_attribute("#call", "data-self")
    host.wait_for_selector(f'#panels .panel[data-pid="{quiet_id}"][data-state="not-analysed"]')
    assert quiet.get_attribute(f'#panels .panel[data-pid="{quiet_id}"]', "data-state") == "not-analysed"

    panels = [(host, host_id), (host, guest_id), (guest, guest_id)]
    for page, pid in panels:
        sel = f'#panels .panel[data-pid="{pid}"]'
        wait_until(lambda p=page, s=sel: p.get_attribute(s, "data-trained") == "false", f"{pid}'s result", 180, info)
    for page, pid in panels:
        note = f'#panels .panel[data-pid="{pid}"] .untrained'
        assert page.is_visible(note), pid
        assert "Untrained model" in (page.text_content(note) or "")
    shoot(host, artifacts, "09-untrained-host")
    # Results flowed for the others all along; none ever arrived about the one who declined.
    assert quiet_id not in (host.get_attribute("#panels", "data-subjects") or "").split()
    assert not quiet.get_attribute("#panels", "data-subjects")
