"""``hoovik-bot demo``: a whole meeting on this machine with no outside services.

It starts the embedded signaling server, creates a room, starts the bot (on the shipped starter
bundle unless ``--bundle`` is given), and N simulated participants that stream real clips (from
../shared/media when present, or files the user passes) or generated media. It prints a live
per-participant table, then a summary; ``--json`` writes the summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from bot.config import BotConfig
from bot.contrib.clips import ClipMedia, generated_clip, load_clip
from bot.contrib.simulated import SimulatedParticipant
from bot.service import BotService
from bot.webrtc.ice import use_loopback_ice
from signaling.base import Role
from signaling.client import SignalingClient, create_room, mint_invite
from signaling.server import SignalingServer

log = logging.getLogger(__name__)

CLIP_NAMES = (
    "crema-d/1001_DFA_ANG_XX.flv",
    "crema-d/1001_DFA_HAP_XX.flv",
    "ravdess/01-01-01-01-01-01-01.mp4",
)


def default_media() -> list[Path]:
    """Real clips from the shared media folder beside the checkout, when it is there."""
    from models.assets import shared_dir

    roots = [shared_dir() / "media", Path.cwd().parent / "shared" / "media"]
    for root in roots:
        found = [root / name for name in CLIP_NAMES if (root / name).is_file()]
        if found:
            return found
    return []


@dataclass
class DemoOptions:
    participants: int = 3
    duration: float = 20.0
    media: list[str] | None = None
    json_path: str | None = None
    speaking: int | None = None  # how many send speech (default: all)
    quiet: bool = False


def _load_clips(opts: DemoOptions, out: TextIO) -> list[ClipMedia]:
    paths = [Path(p) for p in opts.media] if opts.media else default_media()
    clips: list[ClipMedia] = []
    for p in paths:
        try:
            clips.append(load_clip(p))
        except Exception as exc:
            print(f"warning: cannot use {p}: {exc}", file=out)
    if not clips:
        print("no clips found (pass --media FILE); using generated audio/video", file=out)
        clips.append(generated_clip())
    return clips


async def run_demo(opts: DemoOptions, cfg: BotConfig | None = None, out: TextIO = sys.stdout) -> dict[str, Any]:
    cfg = cfg or BotConfig()
    # No external services: the audio model comes from the local cache or an untrained stand-in.
    cfg.models.offline = True
    use_loopback_ice()
    clips = _load_clips(opts, out)
    server = SignalingServer(secrets.token_bytes(32))
    await server.start("127.0.0.1", 0)
    service = BotService(cfg)
    sims: list[SimulatedParticipant] = []
    bot_task: asyncio.Task[None] | None = None
    try:
        await service.start_http()
        print(
            f"signaling on {server.ws_url}; bot telemetry on http://127.0.0.1:{service.http_port}/stats",
            file=out,
        )
        print("loading models…", file=out)
        runtime = await service.load(allow_untrained_audio=True)
        desc = runtime.describe()
        print(
            f"bundle {desc['bundleId']} trained={desc['trained']} (audio model: {desc['audioModel']})",
            file=out,
        )
        if desc.get("licence"):
            print(f"licence: {desc['licence']}", file=out)
        if not desc["trained"]:
            print(
                "NOTE: this model is UNTRAINED — its emotions are not meaningful; every result says trained=false.",
                file=out,
            )
        room, host_token = await create_room(server.url, "demo")
        bot_token = await mint_invite(server.url, room, host_token, "bot")
        bot_session = await SignalingClient.connect(server.ws_url, room, bot_token, "hoovik-bot", "Hoovik Bot", "bot")
        bot_task = asyncio.create_task(service.run_session(bot_session))
        speaking = opts.participants if opts.speaking is None else opts.speaking
        for i in range(opts.participants):
            role: Role = "host" if i == 0 else "participant"
            token = host_token if role == "host" else await mint_invite(server.url, room, host_token, "participant")
            clip = clips[i % len(clips)]
            sim = SimulatedParticipant(
                server.ws_url,
                room,
                token,
                f"p{i + 1}",
                f"participant-{i + 1}",
                clip,
                role=role,
                speaking=i < speaking,
            )
            await sim.start()
            sims.append(sim)
        started = time.time()
        while time.time() - started < opts.duration:
            await asyncio.sleep(1.0)
            if not opts.quiet:
                print(_table(sims, started), file=out, flush=True)
        summary = _summary(sims, started, desc)
        summary["bot"] = service.telemetry.stats()
    finally:
        for sim in sims:
            await sim.stop()
        if bot_task is not None:
            bot_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await bot_task
        await service.stop()
        await server.stop()
    print(_summary_text(summary), file=out)
    if opts.json_path:
        Path(opts.json_path).write_text(json.dumps(summary, indent=1) + "\n")
        print(f"summary written to {opts.json_path}", file=out)
    return summary


def _own(sim: SimulatedParticipant) -> list[Any]:
    return [r for r in sim.results if r.message.get("participantId") == sim.participant_id]


def _table(sims: list[SimulatedParticipant], started: float) -> str:
    elapsed = time.time() - started
    lines = [
        f"t={elapsed:5.1f}s  {'participant':<16}{'results':>8}{'rate/s':>8}  {'profile':<11}{'emotion':<14}{'conf':>6}"
    ]
    for sim in sims:
        own = _own(sim)
        last = own[-1].message if own else None
        res = (last or {}).get("result") or {}
        lines.append(
            f"         {sim.name:<16}{len(own):>8}{len(own) / max(elapsed, 1e-9):>8.2f}  "
            f"{res.get('modality', '-'):<11}{res.get('emotion', '-'):<14}{res.get('confidence', 0):>6.2f}"
        )
    return "\n".join(lines)


def _summary(sims: list[SimulatedParticipant], started: float, desc: dict[str, Any]) -> dict[str, Any]:
    elapsed = time.time() - started
    parts = []
    for sim in sims:
        own = _own(sim)
        lat = np.asarray([r.arrived_wall * 1000 - r.message["capturedAt"] for r in own if r.message.get("capturedAt")])
        first = own[0].arrived_wall if own else started
        span = (own[-1].arrived_wall - first) if len(own) > 1 else 0.0
        labels = Counter(str((r.message.get("result") or {}).get("emotion")) for r in own)
        parts.append(
            {
                "participantId": sim.participant_id,
                "role": sim.role,
                "clip": Path(sim.clip.source).name,
                # How often each label was the headline: with a trained bundle, the clip's emotion
                # should lead (e.g. the CREMA-D angry clip → angry).
                "emotions": dict(labels.most_common()),
                "results": len(own),
                "resultsPerSecond": round((len(own) - 1) / span, 3) if span > 0 else 0.0,
                "profilesSeen": sorted({str(m) for r in own if (m := (r.message.get("result") or {}).get("modality"))}),
                "latencyMs": {
                    "p50": round(float(np.percentile(lat, 50)), 1),
                    "p95": round(float(np.percentile(lat, 95)), 1),
                    "max": round(float(lat.max()), 1),
                }
                if lat.size
                else {},
                "otherParticipantsResults": len(sim.results) - len(own),
            }
        )
    return {
        "durationS": round(elapsed, 2),
        "bundleId": desc["bundleId"],
        "trained": desc["trained"],
        "audioModel": desc["audioModel"],
        "participants": parts,
    }


def _summary_text(summary: dict[str, Any]) -> str:
    lines = [
        f"summary: {summary['durationS']} s, bundle {summary['bundleId']} trained={summary['trained']}",
        f"{'participant':<12}{'results':>8}{'rate/s':>8}{'p50 ms':>8}{'p95 ms':>8}  {'profiles':<22}emotions (clip)",
    ]
    for p in summary["participants"]:
        lat = p["latencyMs"]
        total = max(1, sum(p["emotions"].values()))
        shares = ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in list(p["emotions"].items())[:3])
        lines.append(
            f"{p['participantId']:<12}{p['results']:>8}{p['resultsPerSecond']:>8.2f}"
            f"{lat.get('p50', float('nan')):>8.1f}{lat.get('p95', float('nan')):>8.1f}  "
            f"{','.join(p['profilesSeen']):<22}{shares} ({p['clip']})"
        )
    return "\n".join(lines)
