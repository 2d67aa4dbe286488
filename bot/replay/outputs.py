"""What a replay writes: the JSONL timeline, the same as CSV, summary.json and the HTML report.

Every file is a pure function of the replayed results, so two runs over the same files and bundle
give byte-identical files: lines are ordered by (``ts``, participant order, ``seq``), JSON keys keep
the result schema's order, and nothing records the wall clock or the machine's speed (the CLI
prints the speed instead). ``ts`` and ``latencyMs`` come from the media clock (docs/replay.md).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.config import EngineConfig
from bot.pipeline.results import EmotionResult
from bot.replay.inputs import InputError
from bot.replay.records import ParticipantReplay, ReplayModels
from models.constants import CLASS_NAMES, PROFILES

TIMELINE_JSONL = "timeline.jsonl"
TIMELINE_CSV = "timeline.csv"
SUMMARY_JSON = "summary.json"
REPORT_HTML = "report.html"

CSV_COLUMNS: tuple[str, ...] = (
    "participantId",
    "seq",
    "ts",
    "mediaTime",
    "emotion",
    "confidence",
    "modality",
    "anomaly",
    "anomalyScore",
    "latencyMs",
    "capturedAt",
    *(f"p_{name}" for name in CLASS_NAMES),
    "bundleId",
    "trained",
    "error",
)


@dataclass(frozen=True)
class ReplayOutputs:
    timeline_jsonl: Path
    timeline_csv: Path
    summary_json: Path
    report_html: Path


def ordered_results(participants: Sequence[ParticipantReplay]) -> list[EmotionResult]:
    """All results on one session timeline: by ``ts``, then participant order, then ``seq``."""
    keyed = [(r.ts_ms, i, r.seq, r) for i, p in enumerate(participants) for r in p.results]
    keyed.sort(key=lambda k: (k[0], k[1], k[2]))
    return [k[3] for k in keyed]


def csv_row(message: dict[str, Any]) -> list[Any]:
    """One CSV row from a result message (the JSONL line), so both files carry the same values."""
    res = message["result"]
    probs = res["probs"] or {}
    return [
        message["participantId"],
        message["seq"],
        message["ts"],
        _blank(message["mediaTime"]),
        res["emotion"],
        res["confidence"],
        res["modality"],
        _blank(res["anomaly"]),
        _blank(res["anomalyScore"]),
        message["latencyMs"],
        _blank(message["capturedAt"]),
        *(_blank(probs.get(name)) for name in CLASS_NAMES),
        message["bundleId"],
        _blank(message["trained"]),
        message.get("error", ""),
    ]


def _blank(value: Any) -> Any:
    """CSV cell: empty for null, JSON spelling for booleans (true/false), the value otherwise."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def participant_summary(p: ParticipantReplay, config: EngineConfig) -> dict[str, Any]:
    """Time in each profile, emotion distribution, dominant emotion, anomaly rate, counts.

    Each step stands for one result interval of media time, so the profile times add up to the
    replayed duration; ``none`` is time with no live modality (no result, as live).
    """
    interval = config.result_interval_s
    steps = p.steps
    results = p.results
    profile_steps = {name: 0 for name in (*PROFILES, "none")}
    for s in steps:
        profile_steps[s.profile or "none"] += 1
    label_counts = {name: 0 for name in CLASS_NAMES}
    for r in results:
        label_counts[r.emotion] = label_counts.get(r.emotion, 0) + 1
    n = len(results)
    dominant = None
    if n:
        dominant = max(CLASS_NAMES, key=lambda c: (label_counts[c], -CLASS_NAMES.index(c)))
    ok = [r for r in results if r.probs is not None]
    mean_probs = (
        {name: round(sum(r.probs[k] for r in ok if r.probs) / len(ok), 4) for k, name in enumerate(CLASS_NAMES)}
        if ok
        else None
    )
    scored = [r for r in results if r.anomaly is not None]
    anomalies = sum(1 for r in scored if r.anomaly)
    sampled = p.counters.get("frames_sampled", 0)
    faces = p.counters.get("faces", 0)
    info = p.info
    return {
        "participantId": p.participant_id,
        "name": p.input.name,
        "file": str(p.input.path),
        "offsetS": p.input.offset_s,
        "status": p.status,
        "error": p.error,
        "media": None if info is None else info.describe(),
        "startS": round(p.input.offset_s + p.origin, 4),
        "endS": round(p.input.offset_s + p.end_s, 4),
        "steps": len(steps),
        "results": n,
        "profileSeconds": {k: round(v * interval, 3) for k, v in profile_steps.items()},
        "profileShare": {k: round(v / len(steps), 4) if steps else 0.0 for k, v in profile_steps.items()},
        "emotionCounts": label_counts,
        "emotionDistribution": {k: round(v / n, 4) if n else 0.0 for k, v in label_counts.items()},
        "dominantEmotion": dominant,
        "meanProbs": mean_probs,
        "anomalies": anomalies,
        "anomalyRate": round(anomalies / len(scored), 4) if scored else None,
        "faces": {
            "framesSampled": sampled,
            "facesFound": faces,
            "faceRate": round(faces / sampled, 4) if sampled else None,
        },
        "audio": {
            "windowsEmbedded": p.counters.get("audio_windows", 0),
            "silentSteps": p.counters.get("audio_silent", 0),
        },
        "counters": dict(sorted(p.counters.items())),
    }


def build_summary(
    participants: Sequence[ParticipantReplay],
    input_errors: Sequence[InputError],
    config: EngineConfig,
    models: ReplayModels,
) -> dict[str, Any]:
    errors = [{"file": str(e.path), "participantId": e.participant_id, "error": e.message} for e in input_errors] + [
        {"file": str(p.input.path), "participantId": p.participant_id, "error": p.error}
        for p in participants
        if p.error is not None
    ]
    return {
        "schema": "hoovik-replay-summary/1",
        "bundleId": models.bundle.bundle_id,
        "trained": models.bundle.trained,
        "models": models.description,
        "clock": "media",
        "config": {
            "resultIntervalS": config.result_interval_s,
            "targetFps": config.target_fps,
            "modalityStaleS": config.modality_stale_s,
            "seqLen": config.seq_len,
            "emaAlpha": config.ema_alpha,
            "emaReset": config.ema_reset,
            "emaTtlS": config.ema_ttl_s,
            "confidenceThreshold": config.confidence_threshold,
            "audioBatch": config.audio_max_batch,
            "inferenceBatch": config.inference_max_batch,
        },
        "participants": [participant_summary(p, config) for p in participants],
        "errors": errors,
    }


def write_outputs(
    out_dir: Path,
    participants: Sequence[ParticipantReplay],
    input_errors: Sequence[InputError],
    config: EngineConfig,
    models: ReplayModels,
) -> ReplayOutputs:
    """Write the four files into ``out_dir`` (created); each is written whole, then renamed."""
    from bot.replay.report import render_report

    out_dir.mkdir(parents=True, exist_ok=True)
    messages = [r.to_message() for r in ordered_results(participants)]
    jsonl = "".join(json.dumps(m, separators=(",", ":")) + "\n" for m in messages)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(csv_row(m) for m in messages)
    summary = build_summary(participants, input_errors, config, models)
    outputs = ReplayOutputs(
        out_dir / TIMELINE_JSONL, out_dir / TIMELINE_CSV, out_dir / SUMMARY_JSON, out_dir / REPORT_HTML
    )
    _write(outputs.timeline_jsonl, jsonl)
    _write(outputs.timeline_csv, buf.getvalue())
    _write(outputs.summary_json, json.dumps(summary, indent=2) + "\n")
    _write(outputs.report_html, render_report(participants, summary, config))
    return outputs


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
