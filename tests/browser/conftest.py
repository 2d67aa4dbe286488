"""Fixtures for the browser tests: real Chromium pages against ``hoovik-bot serve`` and its bot.

Everything that speaks WebRTC runs inside a network namespace created here (see ``browser_env``):
the signaling server (``hoovik-bot serve --bot-command …``), the bot it launches when a page presses
"Add the bot" (``hoovik-bot join`` with the shipped starter bundle and the MediaPipe asset),
and every Chromium, whose fake camera and microphone play files made here from the shared clips.
Playwright for Python drives Debian's Chromium (``executable_path``); nothing is downloaded.
Screenshots go to ``test-artifacts/browser/``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Playwright, sync_playwright

sys.path.insert(0, str(Path(__file__).parent))

from browser_env import (
    FakeMedia,
    LaunchBrowser,
    NetNamespace,
    Stack,
    chromium_args,
    environment_problem,
    make_wav,
    make_y4m,
    wait_until,
    write_chromium_wrapper,
)

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "browser"
CLIPS = {"host": "crema-d/1001_DFA_ANG_XX.flv", "guest": "crema-d/1001_DFA_HAP_XX.flv"}
PORT = 8765  # the namespace is private to this run, so a fixed port cannot clash
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def netns() -> Iterator[NetNamespace]:
    problem = environment_problem()
    if problem is not None:
        pytest.fail(problem)
    try:
        ns = NetNamespace.create()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield ns
    finally:
        ns.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def fake_media(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, FakeMedia]:
    out = tmp_path_factory.mktemp("fake-media")
    media = {}
    for who, clip in CLIPS.items():
        src = media_dir / clip
        media[who] = FakeMedia(make_y4m(src, out / f"{who}.y4m"), make_wav(src, out / f"{who}.wav"))
    return media


@pytest.fixture(scope="session")
def stack(
    netns: NetNamespace,
    face_asset: Path,
    artifacts: Path,
) -> Iterator[Stack]:
    secret = secrets.token_bytes(32)
    # No --bundle: the shipped starter bundle, as a host who clicks "Add the bot" gets it.
    bot_cmd = [
        sys.executable, "-m", "bot.cli", "join",
        "--face-asset", str(face_asset),
        "--http-host", "0.0.0.0",  # the namespace's addresses only; lets the test read telemetry
        "--name", "Hoovik Bot",
    ]  # fmt: skip
    cmd = [
        *netns.prefix(),
        str(BIN / "hoovik-bot"), "serve",
        "--host", "0.0.0.0", "--port", str(PORT),
        "--secret", secret.hex(),
        "--bot-command", shlex.join(bot_cmd),
        "--max-bots", "2",
    ]  # fmt: skip
    env = {
        **os.environ,
        "HOOVIK_MODELS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    log_path = artifacts / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    s = Stack(netns, PORT, secret.hex().encode(), process, log_path)
    try:
        wait_until(
            lambda: process.poll() is not None or s.healthy(),
            "the signaling server to answer /health",
            info=s.log_tail,
        )
        if process.poll() is not None:
            pytest.fail(f"hoovik-bot serve exited with {process.returncode}:\n{s.log_tail()}")
        yield s
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    """Module-scoped: Playwright's sync API keeps an event loop marked running while it is open,
    which would stop the asyncio tests of other modules from starting theirs."""
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
def chromium_wrapper(netns: NetNamespace, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_chromium_wrapper(netns, tmp_path_factory.mktemp("chromium") / "chromium-in-netns")


@pytest.fixture
def launch_browser(
    playwright: Playwright, chromium_wrapper: Path, fake_media: dict[str, FakeMedia]
) -> Iterator[LaunchBrowser]:
    """``launch_browser("host")``: a Chromium in the namespace whose camera/mic play that clip."""
    browsers: list[Browser] = []

    def launch(who: str = "host", *, grant_media: bool = True) -> Browser:
        browser = playwright.chromium.launch(
            executable_path=str(chromium_wrapper),
            args=chromium_args(fake_media[who], grant_media=grant_media),
            headless=True,
            timeout=60_000,
        )
        browsers.append(browser)
        return browser

    yield launch
    for browser in browsers:
        with contextlib.suppress(Exception):
            browser.close()
