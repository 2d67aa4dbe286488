"""The meeting page as hosts and invitees use it (issue #14), in real headless Chromium.

A quick stack: ``hoovik-bot serve`` in the test namespace whose "Add the bot" starts a stand-in bot
(``fakes/fake_bot.py``: no models, no WebRTC; it sends scripted results through signaling, the
documented fallback path), and people without a browser (``fakes/fake_person.py``) so that six
people fit in a room cheaply. Only the host is a real Chromium with a fake camera and microphone.
The real bot's path is covered by ``test_meeting_page.py``.

Screenshots go to ``test-artifacts/browser/``; the accessibility check runs axe-core (vendored by
the ``axe-playwright-python`` package) in the page.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_env import LaunchBrowser, NetNamespace, Stack, console_log, http_json, wait_until
from playwright.sync_api import Page

REPO = Path(__file__).resolve().parents[2]
FAKES = Path(__file__).parent / "fakes"
PORT = 8766  # beside the main stack's 8765 in the same private namespace
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def bot_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fake-bot") / "script.json"
    path.write_text("{}")
    return path


@pytest.fixture(scope="module")
def quick(netns: NetNamespace, artifacts: Path, bot_script: Path) -> Iterator[Stack]:
    secret = secrets.token_bytes(32)
    cmd = [
        *netns.prefix(),
        str(BIN / "hoovik-bot"), "serve",
        "--host", "0.0.0.0", "--port", str(PORT),
        "--secret", secret.hex(),
        "--bot-command", shlex.join([sys.executable, str(FAKES / "fake_bot.py")]),
        "--bot-idle-s", "30",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HOOVIK_FAKE_BOT_SCRIPT": str(bot_script)}
    log_path = artifacts / "quick-server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    s = Stack(netns, PORT, secret.hex().encode(), process, log_path)
    try:
        wait_until(lambda: process.poll() is not None or s.healthy(), "the quick server", info=s.log_tail)
        assert process.poll() is None, s.log_tail()
        yield s
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def people(netns: NetNamespace) -> Iterator[Any]:
    """``people(stack, room, host_token, name, mic, camera)`` joins a browserless person."""
    started: list[subprocess.Popen[bytes]] = []

    def join(stack: Stack, room: str, host_token: str, name: str, mic: bool = True, camera: bool = True) -> None:
        status, body = http_json(f"{stack.api}/rooms/{room}/invites", "POST", {"role": "participant"}, host_token)
        assert status == 201, body
        argv = [sys.executable, str(FAKES / "fake_person.py"), f"ws://127.0.0.1:{stack.port}/ws", room, name]
        env = {**os.environ, "HOOVIK_TOKEN": body["token"]}
        started.append(
            subprocess.Popen([*netns.prefix(), *argv, "1" if mic else "0", "1" if camera else "0"], env=env, cwd=REPO)
        )

    yield join
    for proc in started:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def set_script(path: Path, **script: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(script))
    tmp.replace(path)


def create_room(page: Page, stack: Stack, name: str) -> tuple[str, str, str, str]:
    """The landing page, as a host uses it: (room, host link, guest link, host token)."""
    page.goto(stack.page("/"))
    page.fill("#room-name", name)
    page.click("#create-btn")
    page.wait_for_selector("#links[data-ready=true]")
    host_link = page.input_value("#host-link")
    guest_link = page.input_value("#invite-link")
    room = host_link.split("room=")[1].split("&")[0].split("#")[0]
    return room, host_link, guest_link, host_link.split("#token=")[1]


def join(page: Page, link: str, name: str) -> str:
    page.goto(link)
    page.fill("#name", name)
    page.click("#join-btn")
    page.wait_for_selector("#conn-signaling[data-state=connected]")
    pid = page.get_attribute("#call", "data-self")
    assert pid
    return pid


def panel_of(page: Page, name: str) -> str:
    """The selector of the panel whose heading starts with ``name``."""
    pid = page.evaluate(
        """(name) => [...document.querySelectorAll('#panels .panel')]
            .find((p) => p.querySelector('.who').textContent.startsWith(name))?.dataset.pid ?? null""",
        name,
    )
    assert pid, f"no panel for {name}"
    return f'#panels .panel[data-pid="{pid}"]'


def axe(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now."""
    from axe_playwright_python.base import AXE_SCRIPT

    page.evaluate(AXE_SCRIPT)
    results = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5], "help": v["help"]}
        for v in results["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def no_overflow(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"))


# --- item 1: host link vs guest link; item 3 and 4: "Add the bot" when a bot is present, removing it ---


def test_host_link_is_marked_and_the_bot_can_be_added_and_removed(
    quick: Stack, launch_browser: LaunchBrowser, artifacts: Path, people: Any
) -> None:
    page = launch_browser("host").new_page(viewport={"width": 1280, "height": 800})
    log = console_log(page)
    room, host_link, guest_link, host_token = create_room(page, quick, "Links")
    # The host link says what it is, in the link itself and in its label; the guest link does not.
    assert "for=host-only" in host_link and "host-only" not in guest_link
    assert "for you only" in (page.text_content("label[for=host-link]") or "")
    assert page.locator(".host-only #host-link").count() == 1 and page.locator(".host-only #invite-link").count() == 0
    page.screenshot(path=str(artifacts / "10-landing-links.png"), full_page=True)

    # In the meeting: the invite tools are open while the host is alone, folded once the meeting starts.
    join(page, host_link, "Hana")
    assert page.get_attribute("#host-tools", "open") is not None
    page.wait_for_selector("#bot-status[data-state=none]")
    people(quick, room, host_token, "Pat")
    wait_until(lambda: page.get_attribute("#host-tools", "open") is None, "the invite tools to fold", info=lambda: log)

    # Add the bot, then remove it from the page.
    page.click("#add-bot")
    page.wait_for_selector("#bot-status[data-state=joined]")
    page.wait_for_selector("#remove-bot:visible")
    page.click("#remove-bot")
    page.wait_for_selector("#bot-status[data-state=exited]")
    assert "stopped by the host" in (page.text_content("#bot-status") or "")
    wait_until(lambda: quick.bot_status(room, host_token)["state"] == "exited", "the server to report it stopped")
    assert page.is_visible("#add-bot") and page.is_hidden("#remove-bot")

    # A bot started by hand (the command line) is in the room; "Add the bot" must say so, not go blank.
    command = shlex.split(page.input_value("#bot-command"))
    env = {**os.environ, "HOOVIK_BOT_TOKEN": command[0].partition("=")[2]}
    argv = [
        sys.executable,
        str(FAKES / "fake_bot.py"),
        "--signaling",
        f"ws://127.0.0.1:{quick.port}/ws",
        "--room",
        room,
    ]
    hand = subprocess.Popen([*quick.ns.prefix(), *argv], env=env, cwd=REPO)
    try:
        wait_until(lambda: quick.bot_status(room, host_token)["state"] == "joined", "the hand-started bot")
        # Pressed before the page's next status poll: the server answers 409 bot_present.
        page.evaluate("document.querySelector('#add-bot').click()")
        page.wait_for_selector("#bot-status[data-state=joined]")
        text = page.text_content("#bot-status") or ""
        assert "started elsewhere" in text, text
        assert page.is_hidden("#remove-bot"), "only a bot this server started can be removed from the page"
    finally:
        hand.terminate()
        hand.wait(10)


# --- items 2, 5, 6, 7, 9 and the accessibility and screenshot checks --------------------------------


def test_six_people_panels_headline_rate_and_layout(
    quick: Stack, launch_browser: LaunchBrowser, artifacts: Path, people: Any, bot_script: Path
) -> None:
    set_script(
        bot_script,
        trained=True,
        people={
            "Hana": {"kind": "happy"},
            "Ana": {"kind": "fallback"},
            "Ben": {"kind": "happy"},
            "Cy": {"kind": "smoothed", "modality": "audio_only"},
            "Dee": {"kind": "happy", "rate": 1.5, "reducedRate": True},
        },
    )
    browser = launch_browser("host")
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    log = console_log(page)
    room, host_link, guest_link, host_token = create_room(page, quick, "Six")
    host_id = join(page, host_link, "Hana")
    for name in ("Ana", "Ben", "Cy", "Dee"):
        people(quick, room, host_token, name)
    people(quick, room, host_token, "Eve", mic=False, camera=False)  # item 5: nothing to analyse
    page.click("#add-bot")
    page.wait_for_selector("#bot-status[data-state=joined]")

    def info() -> str:
        return f"console: {log[-10:]}\nserver: {quick.log_tail(10)}"

    wait_until(lambda: page.locator("#panels .panel").count() == 6, "six panels", info=info)
    for name in ("Hana", "Ana", "Ben", "Cy", "Dee"):
        wait_until(
            lambda n=name: page.get_attribute(panel_of(page, n), "data-state") == "live", f"{name} live", info=info
        )

    # Item 2: the headline is the result's label; the fallback says why; bars and headline never
    # disagree without an explanation.
    ana = panel_of(page, "Ana")
    assert page.text_content(f"{ana} .label") == "neutral/calm"
    assert page.get_attribute(ana, "data-fallback") == "true"
    reason = page.text_content(f"{ana} .reason") or ""
    assert "too uncertain: showing neutral" in reason and "fearful" in reason, reason
    assert page.get_attribute(f'{ana} .bar[data-label="fearful"]', "data-mark") == "highest"
    ben = panel_of(page, "Ben")
    assert page.text_content(f"{ben} .label") == "happy" and page.is_hidden(f"{ben} .reason")
    assert page.get_attribute(f'{ben} .bar[data-label="happy"]', "data-mark") == "highest shown"
    cy = panel_of(page, "Cy")
    assert page.text_content(f"{cy} .label") == "sad"
    assert "angry" in (page.text_content(f"{cy} .reason") or "")
    # Item 7: a "voice only" profile while the camera is on is explained, not just shown.
    assert page.text_content(f"{cy} .profile") == "voice only (no face seen)"

    # Item 9: the rate each person actually gets, and the "reduced rate" mark.
    dee = panel_of(page, "Dee")

    def rate(sel: str) -> float:
        return float(page.get_attribute(f"{sel} .rate", "data-rate") or 0)

    wait_until(lambda: 1.0 <= rate(dee) <= 2.0 and 2.4 <= rate(ben) <= 4.2, "measured rates", 20, info)
    assert page.is_visible(f"{dee} .reduced") and page.is_hidden(f"{ben} .reduced")
    assert page.text_content(f"{ben} .rate", timeout=1000).endswith("/s")

    # Item 5: someone with no camera and no microphone is told why nothing comes.
    eve = panel_of(page, "Eve")
    assert page.get_attribute(eve, "data-state") == "no-media"
    assert "nothing to analyse" in (page.text_content(f"{eve} .status") or "")

    # Item 6: six people on 1280x800 without scrolling; the invite tools folded.
    assert page.get_attribute("#host-tools", "open") is None
    for sel in [panel_of(page, n) for n in ("Hana", "Ana", "Ben", "Cy", "Dee", "Eve")]:
        box = page.locator(sel).bounding_box()
        assert box is not None and box["y"] + box["height"] <= 800, f"{sel} below the fold: {box}"
    assert page.evaluate("document.documentElement.scrollHeight <= window.innerHeight + 1")
    page.screenshot(path=str(artifacts / "meeting-1280x800.png"))

    # Accessibility: zero serious or critical axe-core violations, here and on the landing page.
    violations = axe(page)
    (artifacts / "axe-meeting.json").write_text(json.dumps(violations, indent=2))
    assert not violations, violations

    # Keyboard: the controls work without a mouse.
    page.focus("#mic-btn")
    page.keyboard.press("Enter")
    assert page.get_attribute("#mic-btn", "aria-pressed") == "true"
    page.keyboard.press("Space")
    assert page.get_attribute("#mic-btn", "aria-pressed") == "false"
    page.focus("#analysis-toggle")
    page.keyboard.press("Space")
    # Item 7: an opted-out panel drops every result and the banner, and says how to resume.
    me = f'#panels .panel[data-pid="{host_id}"]'
    assert page.get_attribute(me, "data-state") == "not-analysed"
    assert "Tick “Analyse me” to resume" in (page.text_content(f"{me} .status") or "")
    assert page.is_hidden(f"{me} .untrained")
    page.keyboard.press("Space")
    wait_until(lambda: page.get_attribute(me, "data-state") == "live", "results after opting back in", info=info)

    # The untrained banner shows only when the result says its bundle is untrained.
    assert page.locator("#panels .panel .untrained:visible").count() == 0
    set_script(bot_script, **{**json.loads(bot_script.read_text()), "trained": False})
    wait_until(lambda: page.get_attribute(ben, "data-trained") == "false", "an untrained result", info=info)
    assert page.is_visible(f"{ben} .untrained")
    page.uncheck("#analysis-toggle")
    assert page.is_hidden(f"{me} .untrained"), "an opted-out panel kept the untrained banner"
    page.check("#analysis-toggle")
    set_script(bot_script, **{**json.loads(bot_script.read_text()), "trained": True})

    # At 760 px the panels come before the (folded) invite tools, not below them.
    page.set_viewport_size({"width": 760, "height": 900})
    panels_box, tools_box = page.locator("#panels").bounding_box(), page.locator("#host-tools").bounding_box()
    assert panels_box is not None and tools_box is not None and panels_box["y"] < tools_box["y"]

    # 200 % zoom on a 1280x800 screen is a 640x400 CSS viewport: nothing runs off the side.
    page.set_viewport_size({"width": 640, "height": 400})
    assert no_overflow(page), "horizontal scrolling at 200 % zoom"
    page.screenshot(path=str(artifacts / "meeting-zoom-200.png"), full_page=True)

    # A phone: the guest's own view at 390x844.
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True).new_page()
    guest_log = console_log(phone)
    guest_id = join(phone, guest_link, "Gus")
    wait_until(
        lambda: phone.get_attribute(f'#panels .panel[data-pid="{guest_id}"]', "data-state") == "live",
        "the guest's results",
        info=lambda: guest_log,
    )
    assert no_overflow(phone), "horizontal scrolling on a phone"
    phone.screenshot(path=str(artifacts / "meeting-390x844.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    assert no_overflow(page)
    page.screenshot(path=str(artifacts / "meeting-host-390x844.png"), full_page=True)
    violations = axe(phone)
    assert not violations, violations

    # Item 5, for yourself: no camera and no microphone (both refused), told at once, not left waiting.
    refused = launch_browser("guest", grant_media=False).new_context(permissions=[]).new_page()
    nobody_id = join(refused, guest_link, "Quinn")
    mine = f'#panels .panel[data-pid="{nobody_id}"]'
    refused.wait_for_selector(f'{mine}[data-state="no-media"]')
    assert "Your camera and microphone are off or missing" in (refused.text_content(f"{mine} .status") or "")

    # Item 7: after *you* leave, no "Bot: left" and no red connection badge.
    page.click("#leave-btn")
    page.wait_for_selector("#problem:not([hidden])")
    assert page.is_hidden("#conn-bot") and page.is_hidden("#conn-signaling")
    assert "Bot" not in (page.text_content(".conns") or "")


def test_landing_page_is_accessible_and_serve_says_where_it_listens(
    quick: Stack, launch_browser: LaunchBrowser
) -> None:
    page = launch_browser("host").new_page(viewport={"width": 1280, "height": 800})
    page.goto(quick.page("/"))
    assert not axe(page)
    page.fill("#room-name", "A11y")
    page.click("#create-btn")
    page.wait_for_selector("#links[data-ready=true]")
    violations = axe(page)
    assert not violations, violations
    # Item 8: listening on 0.0.0.0, `serve` does not claim 127.0.0.1 only.
    log = quick.log_path.read_text()
    assert f"listening on 0.0.0.0:{PORT} (every interface)" in log, log
