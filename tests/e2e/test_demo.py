"""``hoovik-bot demo`` on a fresh cache: the shipped starter bundle by default (real emotions), and the
untrained bundle only when asked for, which says so."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from bot.config import BotConfig
from bot.contrib.demo import DemoOptions, run_demo
from models.bundle import load_bundle


async def test_demo_runs_offline_and_says_it_is_untrained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, media_dir: Path, face_asset: Path
) -> None:
    monkeypatch.setenv("HOOVIK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = BotConfig()
    cfg.models.face_asset = str(face_asset)
    cfg.models.bundle = "untrained"
    out = io.StringIO()
    summary = await run_demo(
        DemoOptions(participants=2, duration=6, json_path=str(tmp_path / "summary.json"), quiet=False), cfg, out
    )
    text = out.getvalue()
    assert "UNTRAINED" in text and "summary:" in text
    assert summary["trained"] is False and summary["bundleId"].startswith("hb-untrained-")
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["participants"] == summary["participants"]
    for p in summary["participants"]:
        assert p["results"] > 0 and p["profilesSeen"], p
        assert set(p) >= {"participantId", "results", "resultsPerSecond", "profilesSeen", "latencyMs"}
    # The host (first participant) also received the other participant's results.
    assert summary["participants"][0]["otherParticipantsResults"] > 0
    assert summary["participants"][1]["otherParticipantsResults"] == 0
    bundle = load_bundle(tmp_path / "cache" / "bundles" / "demo-untrained-v1")
    assert bundle.trained is False


async def test_demo_defaults_to_the_trained_starter_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, media_dir: Path, face_asset: Path
) -> None:
    """No --bundle: the shipped starter bundle, trained, with labels and no download."""
    monkeypatch.setenv("HOOVIK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = BotConfig()
    cfg.models.face_asset = str(face_asset)
    out = io.StringIO()
    summary = await run_demo(DemoOptions(participants=3, duration=8, quiet=True), cfg, out)
    text = out.getvalue()
    assert "UNTRAINED" not in text and "summary:" in text
    assert summary["trained"] is True and summary["bundleId"].startswith("hb-starter-")
    assert not (tmp_path / "cache" / "hf").exists()  # nothing was fetched or cached for audio
    for p in summary["participants"]:
        assert p["results"] > 0 and sum(p["emotions"].values()) == p["results"], p
        assert p["clip"] and p["emotions"], p
