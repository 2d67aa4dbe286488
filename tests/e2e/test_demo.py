"""``hoovik-bot demo`` on a fresh cache: builds the untrained bundle, runs a meeting, writes a summary."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from bot.config import BotConfig
from bot.demo import DemoOptions, run_demo
from models.bundle import load_bundle


async def test_demo_runs_offline_and_says_it_is_untrained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, media_dir: Path, face_asset: Path
) -> None:
    monkeypatch.setenv("HOOVIK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = BotConfig()
    cfg.models.face_asset = str(face_asset)
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
