"""What the browser tests stand on: a private network namespace, fake camera/mic files, Chromium.

Why a namespace: aioice (the bot's ICE) never offers 127.0.0.1 host candidates and Chromium ignores
loopback too, so a browser and the bot on loopback alone never connect. Inside a namespace this
test creates, a veth pair gives both a real (private, test-only) interface address; nothing in the
namespace can reach any other network. The signaling server, the bot it launches and every
Chromium run inside it. The pages are opened at ``http://127.0.0.1`` inside the namespace, which is
a secure context, so ``getUserMedia`` works without extra flags. The test process itself stays
outside and reaches the server through the veth's namespace-side address.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
import wave
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
)
NS_PREFIX = "hoovik-e2e-"
WAIT_S = 30.0
"""Default bound of every "until" wait: a bug fails the test instead of hanging it."""


def wait_until(
    cond: Callable[[], Any], what: str, timeout: float = WAIT_S, info: Callable[[], Any] | None = None
) -> Any:
    """Poll ``cond()`` until it returns something truthy, and return that; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f"; {info()}" if info is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")
        time.sleep(0.05)


def environment_problem() -> str | None:
    """Why this machine cannot run the browser tests, or None."""
    if os.geteuid() != 0:
        return "browser tests create a network namespace (ip netns) and need root; run them as root (CI does)"
    if shutil.which("ip") is None:
        return "'ip' is missing: install iproute2 (scripts/setup-system.sh does)"
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing: apt-get install chromium chromium-driver (scripts/setup-system.sh does)"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=30)


@dataclass
class NetNamespace:
    """``ip netns add`` + a veth pair: ``host_ip`` on our side, ``ns_ip`` inside the namespace."""

    name: str
    host_if: str
    ns_if: str
    host_ip: str
    ns_ip: str

    @classmethod
    def create(cls, tag: str = "") -> NetNamespace:
        """``tag`` (one lowercase letter) tells apart several namespaces of one test process."""
        _remove_stale_namespaces()
        pid = os.getpid()
        # Distinct per concurrent run (and per tag), so two namespaces never share a route.
        subnet = 1 + (pid + 97 * (ord(tag) - 96 if tag else 0)) % 250
        ns = cls(
            name=f"{NS_PREFIX}{pid}" + (f"-{tag}" if tag else ""),
            host_if=f"hvk{pid % 100000}{tag}h",
            ns_if=f"hvk{pid % 100000}{tag}n",
            host_ip=f"10.77.{subnet}.1",
            ns_ip=f"10.77.{subnet}.2",
        )
        try:
            _ip("netns", "add", ns.name)
            ns.exec_ip("link", "set", "lo", "up")
            _ip("link", "add", ns.host_if, "type", "veth", "peer", "name", ns.ns_if)
            _ip("link", "set", ns.ns_if, "netns", ns.name)
            _ip("addr", "add", f"{ns.host_ip}/24", "dev", ns.host_if)
            _ip("link", "set", ns.host_if, "up")
            ns.exec_ip("addr", "add", f"{ns.ns_ip}/24", "dev", ns.ns_if)
            ns.exec_ip("link", "set", ns.ns_if, "up")
        except subprocess.CalledProcessError as exc:
            ns.close()
            raise RuntimeError(f"could not create the test network namespace: {exc.stderr.strip() or exc}") from exc
        return ns

    def exec_ip(self, *args: str) -> None:
        _ip("netns", "exec", self.name, "ip", *args)

    def prefix(self) -> list[str]:
        """Prepend to a command line to run it inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def kill_all(self) -> None:
        """Every process left in the namespace is one this test started."""
        pids = _ip("netns", "pids", self.name, check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)

    def close(self) -> None:
        self.kill_all()
        _ip("link", "del", self.host_if, check=False)
        _ip("netns", "del", self.name, check=False)


def _remove_stale_namespaces() -> None:
    """Namespaces of earlier runs whose process is gone (a crashed or killed test session)."""
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(NS_PREFIX):
            continue
        with contextlib.suppress(ValueError):
            owner_text, _, tag = name[len(NS_PREFIX) :].partition("-")
            owner = int(owner_text)
            if owner != os.getpid() and not Path(f"/proc/{owner}").exists():
                pids = _ip("netns", "pids", name, check=False).stdout.split()
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), signal.SIGKILL)
                _ip("netns", "del", name, check=False)
                _ip("link", "del", f"hvk{owner % 100000}{tag}h", check=False)


# --- fake camera and microphone -----------------------------------------------------------------


def make_y4m(src: Path, dst: Path, width: int = 320, height: int = 240, fps: int = 15, max_s: float = 6.0) -> Path:
    """A raw YUV4MPEG2 file from a real clip, which Chromium's fake camera plays in a loop."""
    step = Fraction(1, fps)
    with av.open(str(src)) as container, dst.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        n = 0
        for frame in container.decode(video=0):
            t = frame.time or 0.0
            while n * step <= t + 1e-9 and n * step < max_s:
                yuv = frame.reformat(width, height, "yuv420p").to_ndarray()
                out.write(b"FRAME\n")
                out.write(np.ascontiguousarray(yuv).tobytes())
                n += 1
            if n * step >= max_s:
                break
    if n == 0:
        raise RuntimeError(f"no video frames in {src}")
    return dst


def make_wav(src: Path, dst: Path, rate: int = 48000, min_s: float = 6.0) -> Path:
    """The clip's speech as 16-bit mono WAV for Chromium's fake microphone.

    Silence before and after the sentence is cut and the speech repeated, so the voice never pauses
    long enough for the bot's voice activity detector to drop the audio profile.
    """
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    chunks: list[np.ndarray] = []
    with av.open(str(src)) as container:
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    pcm = np.concatenate(chunks).astype(np.int16)
    frame_len = rate // 50
    energy = np.array([np.abs(pcm[i : i + frame_len].astype(np.float32)).mean() for i in range(0, len(pcm), frame_len)])
    voiced = np.flatnonzero(energy > 0.1 * energy.max())
    if voiced.size:
        pcm = pcm[voiced[0] * frame_len : (voiced[-1] + 1) * frame_len]
    reps = int(np.ceil(min_s * rate / len(pcm)))
    pcm = np.tile(pcm, reps)
    with wave.open(str(dst), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return dst


@dataclass(frozen=True)
class FakeMedia:
    y4m: Path
    wav: Path


def chromium_args(media: FakeMedia, *, grant_media: bool = True) -> list[str]:
    args = [
        *CHROMIUM_FLAGS,
        f"--use-file-for-fake-video-capture={media.y4m}",
        f"--use-file-for-fake-audio-capture={media.wav}",
    ]
    if grant_media:
        args.append("--use-fake-ui-for-media-stream")
    return args


def write_chromium_wrapper(ns: NetNamespace, path: Path) -> Path:
    """An executable that starts Debian's Chromium inside the namespace (Playwright's pipe survives
    ``ip netns exec``, which only switches the network namespace and then execs)."""
    path.write_text(f'#!/bin/sh\nexec ip netns exec {ns.name} {CHROMIUM} "$@"\n')
    path.chmod(0o755)
    return path


# --- HTTP from outside the namespace ------------------------------------------------------------


def http_json(url: str, method: str = "GET", body: Any = None, token: str | None = None) -> tuple[int, Any]:
    import json

    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@dataclass
class Stack:
    """``hoovik-bot serve`` inside the namespace; ``page()`` is how browsers there address it."""

    ns: NetNamespace
    port: int
    secret: bytes
    process: subprocess.Popen[bytes]
    log_path: Path

    def page(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def api(self) -> str:
        return f"http://{self.ns.ns_ip}:{self.port}"

    def create_room(self, name: str = "test") -> tuple[str, str]:
        status, body = http_json(f"{self.api}/rooms", "POST", {"name": name})
        assert status == 201, body
        return body["roomId"], body["hostToken"]

    def bot_status(self, room: str, host_token: str) -> dict[str, Any]:
        status, body = http_json(f"{self.api}/rooms/{room}/bot", token=host_token)
        assert status == 200, body
        return dict(body)

    def bot_stats(self, room: str, host_token: str) -> dict[str, Any]:
        """The launched bot's /stats/json, reached through the namespace's address."""
        url = self.bot_status(room, host_token).get("telemetryUrl")
        assert url, "the launched bot reported no telemetry URL"
        port = url.rsplit(":", 1)[1].split("/", 1)[0]
        status, body = http_json(f"http://{self.ns.ns_ip}:{port}/stats/json")
        assert status == 200, body
        return dict(body)

    def healthy(self) -> bool:
        with contextlib.suppress(OSError, ValueError):
            return http_json(f"{self.api}/health")[0] == 200
        return False

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


LaunchBrowser = Callable[..., Any]
"""``launch_browser(who, grant_media=True)`` → a Playwright ``Browser`` in the namespace."""


# --- pages --------------------------------------------------------------------------------------


def console_log(page: Any) -> list[str]:
    """Collect a Playwright page's console output, to show when a test fails."""
    lines: list[str] = []
    page.on("console", lambda msg: lines.append(f"{msg.type}: {msg.text}"))
    page.on("pageerror", lambda err: lines.append(f"pageerror: {err}"))
    return lines


def shoot(page: Any, directory: Path, name: str) -> Path:
    path = directory / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
