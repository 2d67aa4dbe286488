"""The meeting page in real headless Chromium: invite the bot, see live results, toggle, opt out.

Two browsers with fake cameras and microphones playing real clips join one room: the host (who
created it on the landing page and pressed "Add the bot") and a participant who opened the invite
link. The bot is the real ``hoovik-bot join`` process the server launched. Waits are bounded only so
that a bug fails instead of hanging; the only time asserted is the issue's own 1 s bound.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from browser_env import LaunchBrowser, Stack, console_log, shoot, wait_until
from playwright.sync_api import Page

BOT_JOIN_S = 180.0  # loading models in a fresh process on two busy cores


def panel(pid: str) -> str:
    return f'#panels .panel[data-pid="{pid}"]'


def count(page: Page, pid: str) -> int:
    value = page.get_attribute(panel(pid), "data-count")
    return int(value or 0)


def profile(page: Page, pid: str) -> str | None:
    return page.get_attribute(f"{panel(pid)} .profile", "data-profile")


def join(page: Page, link: str, name: str) -> str:
    """Open an invite link, join under ``name``; the participantId the server gave us."""
    page.goto(link)
    page.fill("#name", name)
    page.click("#join-btn")
    page.wait_for_selector("#conn-signaling[data-state=connected]")
    pid = page.get_attribute("#call", "data-self")
    assert pid
    return pid


def watch_profile(page: Page, pid: str) -> None:
    """Record in the page when this panel's profile first changes after ``click_timed``."""
    page.evaluate(
        """(sel) => {
            const node = document.querySelector(sel);
            window.__profileChanged = null;
            const start = node.dataset.profile;
            new MutationObserver((_, obs) => {
                if (window.__clickedAt !== undefined && node.dataset.profile !== start) {
                    window.__profileChanged = performance.now();
                    obs.disconnect();
                }
            }).observe(node, { attributes: true, attributeFilter: ["data-profile"] });
        }""",
        f"{panel(pid)} .profile",
    )


def click_timed(page: Page, selector: str) -> None:
    page.evaluate("(sel) => { window.__clickedAt = performance.now(); document.querySelector(sel).click(); }", selector)


def bot_participant(stats: dict[str, Any], pid: str) -> dict[str, Any]:
    return next(p for p in stats["participants"] if p["participantId"] == pid)


def test_two_browsers_invite_the_bot_and_see_live_results(
    stack: Stack, launch_browser: LaunchBrowser, artifacts: Path
) -> None:
    host = launch_browser("host").new_page(viewport={"width": 1280, "height": 900})
    host_log = console_log(host)
    guest = launch_browser("guest").new_page(viewport={"width": 1280, "height": 720})
    guest_log = console_log(guest)

    def logs() -> str:
        return f"host console: {host_log[-15:]}\nguest console: {guest_log[-15:]}\nserver:\n{stack.log_tail(15)}"

    # Landing page: create the room, read the links, add the bot.
    host.goto(stack.page("/"))
    host.fill("#room-name", "Standup")
    host.click("#create-btn")
    host.wait_for_selector("#links[data-ready=true]")
    host_link = host.input_value("#host-link")
    invite_link = host.input_value("#invite-link")
    command = host.input_value("#bot-command")
    room = host_link.split("room=")[1].split("&")[0].split("#")[0]
    assert "for=host-only" in host_link and "host-only" not in invite_link
    host_token = host_link.split("#token=")[1]
    assert command.startswith("HOOVIK_BOT_TOKEN=")
    assert command.endswith(f" hoovik-bot join --signaling ws://127.0.0.1:8765/ws --room {room}")
    assert "--token" not in command
    assert "#token=" in invite_link and invite_link != host_link
    host.click("#add-bot")
    shoot(host, artifacts, "01-landing-bot-starting")
    host.wait_for_selector("#bot-status[data-state=joined]", timeout=BOT_JOIN_S * 1000)
    assert stack.bot_status(room, host_token)["state"] == "joined"

    # Both join; each offers to the bot, and the two browsers connect to each other.
    host_id = join(host, host_link, "Hana")
    guest_id = join(guest, invite_link, "Pat")
    for page, other in ((host, guest_id), (guest, host_id)):
        page.wait_for_selector("#conn-bot[data-state=connected]")
        page.wait_for_selector(f'.tile[data-pid="{other}"][data-conn=connected]')

    # Each sees its own results updating; the host sees both participants' panels.
    wait_until(lambda: count(guest, guest_id) >= 3 and count(host, host_id) >= 3, "first results", 60, logs)
    wait_until(lambda: count(host, guest_id) >= 3, "the guest's results on the host's page", 30, logs)

    def counts() -> tuple[int, int, int]:
        return count(host, host_id), count(host, guest_id), count(guest, guest_id)

    before = counts()
    wait_until(lambda: all(a > b for a, b in zip(counts(), before, strict=True)), "panels to keep updating", info=logs)
    assert host.locator("#panels .panel").count() == 2
    assert guest.locator("#panels .panel").count() == 1
    assert guest.get_attribute("#panels", "data-subjects") == guest_id, "a participant saw someone else's results"
    assert set((host.get_attribute("#panels", "data-subjects") or "").split()) == {host_id, guest_id}
    for page, pid in ((host, host_id), (host, guest_id), (guest, guest_id)):
        p = panel(pid)
        assert page.text_content(f"{p} .label") not in ("", "—")
        assert page.locator(f"{p} .bars .bar").count() == 6
        assert page.is_visible(f"{p} canvas.timeline")
        assert profile(page, pid) in ("both", "audio_only", "video_only")
        # The default (starter) bundle is trained: no untrained warning, and the page says what the bot said.
        assert page.get_attribute(p, "data-trained") == "true"
        assert page.is_hidden(f"{p} .untrained")
    shoot(host, artifacts, "02-host-live")
    shoot(guest, artifacts, "03-guest-live")

    # Camera off: the profile shown changes within 1 s (the bot hears it through signaling).
    wait_until(lambda: profile(guest, guest_id) == "both", "the guest's profile 'both'", info=logs)
    watch_profile(guest, guest_id)
    click_timed(guest, "#cam-btn")
    changed = wait_until(lambda: guest.evaluate("window.__profileChanged"), "a new profile after camera off", 10, logs)
    elapsed_ms = changed - guest.evaluate("window.__clickedAt")
    assert profile(guest, guest_id) == "audio_only"
    assert elapsed_ms <= 1000, f"profile changed {elapsed_ms:.0f} ms after the camera was turned off"
    (artifacts / "camera-toggle-ms.txt").write_text(f"{elapsed_ms:.0f}\n")
    wait_until(lambda: profile(host, guest_id) == "audio_only", "the host to see 'voice only'", info=logs)
    host.wait_for_selector(f'.tile[data-pid="{guest_id}"].camera-off')
    shoot(guest, artifacts, "04-guest-camera-off")
    guest.click("#cam-btn")
    wait_until(lambda: profile(guest, guest_id) == "both", "the profile 'both' after camera on", info=logs)

    # Opt out: "not analysed" everywhere, the bot stops within 1 s and keeps nothing of them.
    host_before = count(host, host_id)
    bot_before = bot_participant(stack.bot_stats(room, host_token), guest_id)["counters"].get("results", 0)
    clicked = time.monotonic()
    guest.click("#analysis-toggle")
    assert guest.get_attribute(panel(guest_id), "data-state") == "not-analysed"
    assert (guest.text_content(f"{panel(guest_id)} .status") or "").startswith("Not analysed")
    host.wait_for_selector(f'{panel(guest_id)}[data-state="not-analysed"]')
    assert (host.text_content(f"{panel(guest_id)} .status") or "").startswith("Not analysed")
    assert host.is_visible(f'.tile[data-pid="{guest_id}"] .not-analysed')
    time.sleep(max(0.0, clicked + 1.0 - time.monotonic()))
    stopped_at = bot_participant(stack.bot_stats(room, host_token), guest_id)
    time.sleep(2.0)
    later = bot_participant(stack.bot_stats(room, host_token), guest_id)
    assert later["analysed"] is False
    assert later["faceSeq"] == 0 and later["audioSeq"] == 0, later
    assert later["counters"].get("results", 0) == stopped_at["counters"].get("results", 0), (
        "the bot still produced results for an opted-out participant 1 s after the opt-out"
    )
    assert stopped_at["counters"].get("results", 0) >= bot_before
    assert count(host, guest_id) == 0 and count(guest, guest_id) == 0
    wait_until(lambda: count(host, host_id) > host_before, "the host's own results to go on", info=logs)
    shoot(host, artifacts, "05-host-guest-opted-out")
    shoot(guest, artifacts, "06-guest-opted-out")

    # And back in: analysed again, results come back.
    guest.click("#analysis-toggle")
    wait_until(lambda: count(guest, guest_id) >= 2, "results after opting back in", 30, logs)
    wait_until(lambda: count(host, guest_id) >= 1, "the host to see them again", info=logs)
    assert host.get_attribute(panel(guest_id), "data-state") != "not-analysed"

    # Each panel shows the rate that actually arrives (issue #14 item 9); the host removes the bot.
    wait_until(lambda: float(host.get_attribute(f"{panel(host_id)} .rate", "data-rate") or 0) > 0, "a measured rate")
    host.click("#remove-bot")
    host.wait_for_selector("#bot-status[data-state=exited]")
    assert stack.bot_status(room, host_token)["message"] == "stopped by the host"
    host.wait_for_selector("#conn-bot[data-state=none]")
