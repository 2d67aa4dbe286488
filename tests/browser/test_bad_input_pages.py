"""Bad input in the browser: wrong or expired invite links, and a person who refuses the camera.

A bad link must produce a page that says what is wrong *before* the browser asks for the camera;
a refused camera or microphone must leave the person in the meeting with what they allowed.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from browser_env import LaunchBrowser, Stack, console_log, http_json, shoot, wait_until
from playwright.sync_api import Page

from signaling.tokens import TokenSigner

COUNT_GET_USER_MEDIA = """
window.__getUserMediaCalls = 0;
if (navigator.mediaDevices) {
  const original = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = (c) => { window.__getUserMediaCalls += 1; return original(c); };
}
"""


def invite(stack: Stack, room: str, host_token: str, role: str = "participant") -> str:
    status, body = http_json(f"{stack.api}/rooms/{room}/invites", "POST", {"role": role}, token=host_token)
    assert status == 201, body
    return str(body["token"])


def problem_page(page: Page) -> tuple[str | None, str]:
    page.wait_for_selector("#problem:not([hidden])")
    return page.get_attribute("#problem", "data-code"), page.text_content("#problem-title") or ""


@pytest.fixture
def page(launch_browser: LaunchBrowser) -> Page:
    p = launch_browser("host").new_context().new_page()
    p.add_init_script(COUNT_GET_USER_MEDIA)
    return p


def test_wrong_and_expired_links_get_clear_pages(stack: Stack, page: Page, artifacts: Path) -> None:
    room, host_token = stack.create_room("bad links")
    other_room, _ = stack.create_room("another")
    signer = TokenSigner(stack.secret)
    past = TokenSigner(stack.secret, clock=lambda: time.time() - 7200)
    cases = {
        "token_malformed": (room, "not-a-token", "This invite link is not valid"),
        "token_bad_signature": (
            room,
            TokenSigner(b"s" * 32).mint(room, "participant", 600),
            "This invite link is not valid",
        ),
        "token_expired": (room, past.mint(room, "participant", 60), "This invite link has expired"),
        "token_wrong_room": (
            room,
            signer.mint(other_room, "participant", 600),
            "This invite link is for another meeting",
        ),
        "room_not_found": ("NoSuchRoom", signer.mint("NoSuchRoom", "participant", 600), "This meeting has ended"),
        "bot_invite": (room, invite(stack, room, host_token, "bot"), "This is the bot's invite"),
    }
    for code, (room_id, token, title) in cases.items():
        page.goto(stack.page(f"/meet?room={room_id}#token={token}"))
        assert problem_page(page) == (code, title), code
        assert page.is_hidden("#prejoin") and page.is_hidden("#call")
        # No red "not connected" badge over an error page (issue #14 item 7).
        assert page.is_hidden("#conn-signaling") and page.is_hidden("#conn-bot")
        assert page.evaluate("window.__getUserMediaCalls") == 0, f"{code}: the camera was requested"
        if code == "token_expired":
            assert "Ask the host for a new invite link" in (page.text_content("#problem-text") or "")
            shoot(page, artifacts, "07-expired-link")

    page.goto(stack.page(f"/meet?room={room}"))
    assert problem_page(page) == ("incomplete", "This link is incomplete")
    page.goto(stack.page(f"/?room={room}"))
    page.wait_for_selector("#need-invite:not([hidden])")
    assert room in (page.text_content("#need-invite") or "")


def test_refused_camera_or_microphone_still_joins(stack: Stack, launch_browser: LaunchBrowser, artifacts: Path) -> None:
    room, host_token = stack.create_room("permissions")
    browser = launch_browser("guest", grant_media=False)  # no auto-accept: the contexts decide
    host = browser.new_context(permissions=["camera", "microphone"]).new_page()
    host_log = console_log(host)
    host.goto(stack.page(f"/meet?room={room}#token={host_token}"))
    host.fill("#name", "Hana")
    host.click("#join-btn")
    host.wait_for_selector("#conn-signaling[data-state=connected]")

    # Camera refused, microphone allowed.
    guest = browser.new_context(permissions=["microphone"]).new_page()
    guest.goto(stack.page(f"/meet?room={room}#token={invite(stack, room, host_token)}"))
    guest.fill("#name", "Pat")
    guest.click("#join-btn")
    guest.wait_for_selector("#conn-signaling[data-state=connected]")
    notice = guest.text_content('.media-problem[data-device="camera"]') or ""
    assert "Permission to use your camera was denied" in notice and "without it" in notice
    assert guest.locator(".media-problem").count() == 1
    assert guest.is_disabled("#cam-btn") and guest.text_content("#cam-btn") == "No camera"
    assert guest.is_enabled("#mic-btn")
    guest_id = guest.get_attribute("#call", "data-self")
    # The others see them: connected, microphone on, camera off.
    tile = f'.tile[data-pid="{guest_id}"]'
    wait_until(
        lambda: host.get_attribute(tile, "data-conn") == "connected",
        "the host to connect to the guest",
        info=lambda: host_log[-10:],
    )
    host.wait_for_selector(f"{tile}.camera-off")
    assert host.is_hidden(f"{tile} .mic")
    shoot(guest, artifacts, "08-camera-refused")

    # Both refused: still in the meeting, told plainly what that means.
    nobody = browser.new_context(permissions=[]).new_page()
    nobody.goto(stack.page(f"/meet?room={room}#token={invite(stack, room, host_token)}"))
    nobody.fill("#name", "Quiet")
    nobody.click("#join-btn")
    nobody.wait_for_selector("#conn-signaling[data-state=connected]")
    devices = {n.get_attribute("data-device") for n in nobody.query_selector_all(".media-problem")}
    assert devices == {"camera", "microphone", "both"}
    assert "Others cannot see or hear you" in (nobody.text_content('.media-problem[data-device="both"]') or "")
    assert nobody.is_disabled("#cam-btn") and nobody.is_disabled("#mic-btn")
