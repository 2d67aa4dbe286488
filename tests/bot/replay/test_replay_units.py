"""Replay's pure parts: input resolution and manifests, the media-clock timeline, the outputs.

These run without models or media decoding; test_replay.py runs the whole thing on real clips.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bot.config import EngineConfig
from bot.pipeline.results import EmotionResult
from bot.pipeline.sampling import sampling_fps
from bot.replay.decode import AudioEvent, VideoEvent
from bot.replay.inputs import ReplayInput, read_manifest, resolve_inputs
from bot.replay.outputs import csv_row, ordered_results, participant_summary
from bot.replay.records import ParticipantReplay, StepRecord
from bot.replay.report import render_report
from bot.replay.timeline import StepPlan, Timeline
from models.constants import SAMPLE_RATE

# -- inputs --------------------------------------------------------------------------------------


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_files_and_folders(tmp_path: Path) -> None:
    a = _touch(tmp_path / "rec" / "b.wav")
    b = _touch(tmp_path / "rec" / "a.MP4")
    _touch(tmp_path / "rec" / "notes.txt")
    _touch(tmp_path / "rec" / ".hidden.wav")
    _touch(tmp_path / "rec" / "sub" / "c.wav")  # folders are not recursive
    single = _touch(tmp_path / "single.flv")
    inputs, errors = resolve_inputs([tmp_path / "rec", single])
    assert errors == []
    assert [(i.path, i.participant_id) for i in inputs] == [(b, "a"), (a, "b"), (single, "single")]


def test_bad_arguments_are_errors_not_exceptions(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    txt = _touch(tmp_path / "notes.txt")
    good = _touch(tmp_path / "ok.wav")
    inputs, errors = resolve_inputs([tmp_path / "missing.mp4", txt, tmp_path / "empty", good])
    assert [i.path for i in inputs] == [good]
    messages = [e.message for e in errors]
    assert "no such file" in messages[0]
    assert "unsupported extension '.txt'" in messages[1]
    assert "holds no media files" in messages[2]


def test_duplicate_ids_get_suffixes(tmp_path: Path) -> None:
    a = _touch(tmp_path / "x" / "clip.wav")
    b = _touch(tmp_path / "y" / "clip.wav")
    c = _touch(tmp_path / "z" / "clip-2.wav")
    inputs, _ = resolve_inputs([a, b, c])
    assert [i.participant_id for i in inputs] == ["clip", "clip-2", "clip-2-2"]


def test_json_manifest(tmp_path: Path) -> None:
    _touch(tmp_path / "media" / "a.webm")
    _touch(tmp_path / "media" / "b.wav")
    manifest = tmp_path / "session.json"
    manifest.write_text(
        json.dumps(
            {
                "participants": [
                    {"file": "media/a.webm", "participant": "alice", "name": "Alice", "offset": 2.5},
                    "media/b.wav",
                    {"path": "media/missing.mkv", "id": "carol"},
                ]
            }
        )
    )
    inputs, errors = resolve_inputs([manifest])
    assert inputs == [
        ReplayInput(tmp_path / "media" / "a.webm", "alice", "Alice", 2.5),
        ReplayInput(tmp_path / "media" / "b.wav", "b", "", 0.0),
    ]
    assert len(errors) == 1 and errors[0].participant_id == "carol" and "no such file" in errors[0].message


def test_csv_manifest(tmp_path: Path) -> None:
    _touch(tmp_path / "a.mkv")
    _touch(tmp_path / "b.mp3")
    manifest = tmp_path / "m.csv"
    manifest.write_text("File,Participant,Name,Offset\na.mkv,p1,Pat,0\nb.mp3,,,1.25\n")
    assert read_manifest(manifest) == [
        ReplayInput(tmp_path / "a.mkv", "p1", "Pat", 0.0),
        ReplayInput(tmp_path / "b.mp3", "b", "", 1.25),
    ]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.json", "{not json", "invalid JSON"),
        ("bad2.json", '{"participants": 3}', "expected a list"),
        ("bad3.json", '[{"participant": "x"}]', "missing 'file'"),
        ("bad4.json", '[{"file": "a.wav", "offset": "soon"}]', "not a number"),
        ("bad.csv", "name,offset\nx,1\n", "'file' column"),
    ],
)
def test_bad_manifests_are_reported(tmp_path: Path, name: str, text: str, message: str) -> None:
    manifest = tmp_path / name
    manifest.write_text(text)
    inputs, errors = resolve_inputs([manifest])
    assert inputs == [] and len(errors) == 1 and message in errors[0].message


# -- timeline ------------------------------------------------------------------------------------


def _events(
    seconds: float, fps: float = 30.0, audio: bool = True, video: bool = True, gap: tuple[float, float] | None = None
) -> list[VideoEvent | AudioEvent]:
    """Synthetic arrivals: frames at i/fps, 20 ms audio chunks arriving at their end."""
    rng = np.random.default_rng(0)
    out: list[VideoEvent | AudioEvent] = []
    if video:
        out += [VideoEvent(i / fps, f"frame{i}") for i in range(int(seconds * fps))]
    if audio:
        n = SAMPLE_RATE // 50
        for k in range(int(seconds * 50)):
            start = k * 0.02
            if gap and gap[0] <= start < gap[1]:
                continue
            out.append(AudioEvent(start + 0.02, rng.standard_normal(n).astype(np.float32) * 0.1, start))
    return sorted(out, key=lambda e: (e.arrival, isinstance(e, VideoEvent)))


def _run(timeline: Timeline, events: list[VideoEvent | AudioEvent]) -> list[StepPlan]:
    out: list[StepPlan] = []
    for e in events:
        out += timeline.feed(e)
    out += timeline.finish(max(e.arrival for e in events))
    return out


def test_steps_every_interval_from_the_origin() -> None:
    steps = _run(Timeline(EngineConfig(), 0.0), _events(3.0))
    assert [s.index for s in steps] == list(range(10))
    assert [round(s.time, 6) for s in steps] == [round(0.3 * (k + 1), 6) for k in range(10)]


def test_each_step_samples_the_newest_frame() -> None:
    timeline = Timeline(EngineConfig(), 0.0)
    steps = _run(timeline, _events(4.0, fps=30.0))
    assert sampling_fps(EngineConfig()) == pytest.approx(1 / 0.3)  # one frame per step at most
    for s in steps:
        assert s.face is not None and s.video_last is not None
        assert s.face.media_time == s.video_last <= s.time < s.face.media_time + 1 / 30 + 1e-9
    assert timeline.counters["frames_sampled"] == len(steps) == 13
    assert timeline.counters["frames_skipped"] > 0


def test_a_lower_fps_samples_on_some_steps_only() -> None:
    cfg = EngineConfig(target_fps=1.5)  # 0.45 frames per step
    timeline = Timeline(cfg, 0.0)
    steps = _run(timeline, _events(6.0))
    sampled = [s for s in steps if s.face is not None]
    # The engine's credit is capped at one frame, so 0.45 frames per step samples every third step.
    assert [s.index for s in sampled] == list(range(0, len(steps), 3))
    assert timeline.counters["face_throttled"] == len(steps) - len(sampled)


def test_a_stale_camera_is_not_sampled() -> None:
    # A 2 fps camera: between frames the stream is stale (> 0.4 s) at some steps.
    steps = _run(Timeline(EngineConfig(), 0.0), _events(4.0, fps=2.0, audio=False))
    for s in steps:
        fresh = s.video_last is not None and s.time - s.video_last <= 0.4
        assert (s.face is not None) <= fresh
    assert 0 < sum(s.face is not None for s in steps) <= 8  # never the same frame twice


def test_a_step_sees_what_arrived_by_its_time() -> None:
    for s in _run(Timeline(EngineConfig(), 0.0), _events(1.0)):
        assert s.audio_last is not None and s.audio_last <= s.time
        assert s.video_last is not None and s.video_last <= s.time
        assert s.window is not None
        assert s.window.end_media_time == s.audio_last
        assert s.window.samples.size == min(9600, round(s.audio_last * SAMPLE_RATE))


def test_audio_gap_makes_the_stream_stale_and_resumes() -> None:
    steps = _run(Timeline(EngineConfig(), 0.0), _events(4.0, video=False, gap=(1.0, 2.5)))
    with_window = [round(s.time, 2) for s in steps if s.window is not None]
    # Last chunk before the gap arrives at 1.0: fresh (<= 0.4 s) until 1.4, stale after, back from 2.52.
    assert 1.2 in with_window and 1.5 not in with_window and 2.4 not in with_window and 2.7 in with_window


def test_silence_is_not_embedded() -> None:
    timeline = Timeline(EngineConfig(), 0.0)
    n = SAMPLE_RATE // 50
    events: list[VideoEvent | AudioEvent] = [
        AudioEvent(0.02 * (k + 1), np.zeros(n, np.float32), 0.02 * k) for k in range(50)
    ]
    steps = _run(timeline, events)
    assert steps and all(s.window is None and s.silent for s in steps)
    assert timeline.counters["audio_silent"] == len(steps)


def test_origin_shifts_the_schedule() -> None:
    events: list[VideoEvent | AudioEvent] = [VideoEvent(10.0 + i / 30, i) for i in range(30)]
    steps = _run(Timeline(EngineConfig(), 10.0), events)
    assert [round(s.time, 6) for s in steps] == [10.3, 10.6, 10.9]


# -- outputs --------------------------------------------------------------------------------------


def _result(pid: str, seq: int, t: float, emotion: str = "happy", anomaly: bool = False) -> EmotionResult:
    return EmotionResult(
        participant_id=pid,
        seq=seq,
        emotion=emotion,
        confidence=0.5,
        probs=(0.1, 0.1, 0.1, 0.5, 0.1, 0.1),
        modality="both",
        anomaly=anomaly,
        anomaly_score=0.01,
        latency_ms=10.0,
        ts_ms=round(t * 1000),
        media_time=t - 0.01,
        captured_at_ms=round((t - 0.01) * 1000),
        bundle_id="b",
        trained=False,
    )


def _participant(pid: str, results: list[EmotionResult], none_steps: int = 0) -> ParticipantReplay:
    p = ParticipantReplay(ReplayInput(Path(f"{pid}.wav"), pid))
    p.steps = [StepRecord(0.3 * (k + 1), None, None) for k in range(none_steps)]
    p.steps += [StepRecord(r.ts_ms / 1000, r.modality, r) for r in results]
    p.end_s = p.steps[-1].time if p.steps else 0.0
    p.counters = {"frames_sampled": 10, "faces": 7}
    return p


def test_results_are_ordered_on_one_timeline() -> None:
    a = _participant("a", [_result("a", 1, 0.3), _result("a", 2, 0.6)])
    b = _participant("b", [_result("b", 1, 0.3), _result("b", 2, 0.45)])
    assert [(r.participant_id, r.seq) for r in ordered_results([a, b])] == [("a", 1), ("b", 1), ("b", 2), ("a", 2)]


def test_summary_counts() -> None:
    results = [
        _result("a", 1, 0.6, "happy"),
        _result("a", 2, 0.9, "sad", anomaly=True),
        _result("a", 3, 1.2, "happy"),
    ]
    s = participant_summary(_participant("a", results, none_steps=1), EngineConfig())
    assert s["steps"] == 4 and s["results"] == 3
    assert s["profileSeconds"] == {"both": 0.9, "audio_only": 0.0, "video_only": 0.0, "none": 0.3}
    assert s["emotionCounts"]["happy"] == 2 and s["dominantEmotion"] == "happy"
    assert s["emotionDistribution"]["sad"] == pytest.approx(1 / 3, abs=1e-4)
    assert s["anomalies"] == 1 and s["anomalyRate"] == pytest.approx(1 / 3, abs=1e-4)
    assert s["faces"] == {"framesSampled": 10, "facesFound": 7, "faceRate": 0.7}
    assert s["status"] == "ok"


def test_csv_row_matches_the_message() -> None:
    msg = _result("a", 1, 0.3).to_message()
    row = csv_row(msg)
    assert row[:3] == ["a", 1, 300]
    assert row[7] == "false" and row[-2] == "false" and row[-1] == ""


def test_report_escapes_names_and_embeds_no_external_resource() -> None:
    p = _participant("<script>alert(1)</script>", [_result("x", 1, 0.3)])
    summary = {
        "bundleId": "b",
        "trained": False,
        "participants": [participant_summary(p, EngineConfig())],
        "errors": [{"file": "f", "participantId": None, "error": "</script><b>bad</b>"}],
    }
    page = render_report([p], summary, EngineConfig())
    assert "<script>alert(1)</script>" not in page
    assert "</script><b>bad" not in page
    assert "src=" not in page and "href=" not in page
    assert page == render_report([p], summary, EngineConfig())
