"""Replay end to end over the shared clips and generated recordings, with the real models' code.

Models: the golden bundle imported from ../shared, the real MediaPipe asset, and a small untrained
Wav2Vec2 (``untrained_wav2vec2("small")``: production output width, seeded). What is checked:
every clip yields results; faces are found on the clips that show faces (rates measured and
documented in docs/replay.md); profiles follow the streams present, including a generated video-
only file and files whose audio or video stops and resumes; two runs are byte-identical; bad files
get a clear error while the others' results are written; and, step for step, replay produces the
very messages the live :class:`bot.live.engine.Engine` produces when fed the same media on the same clock.
No test asserts wall-clock speed (that is bench/bench_replay.py's job).
"""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bot.cli import main as cli_main
from bot.config import EngineConfig
from bot.live.engine import Engine
from bot.pipeline.results import BundleInfo, EmotionResult
from bot.replay.decode import MediaReader, VideoEvent, probe
from bot.replay.inputs import ReplayInput, resolve_inputs
from bot.replay.outputs import CSV_COLUMNS
from bot.replay.records import ParticipantReplay, ReplayModels
from bot.replay.run import ReplayRun, replay
from bot.replay.synth import Gap, write_recording
from models.audio import AudioEmbedder
from models.bundle import load_bundle
from models.face import FaceFeatureExtractor
from models.hoovik_import import import_hoovik
from models.predictor import Predictor
from models.untrained import untrained_wav2vec2

FACE_CLIPS = ("crema-d/1001_DFA_ANG_XX.flv", "crema-d/1001_DFA_HAP_XX.flv", "ravdess/01-01-01-01-01-01-01.mp4")
WAV_CLIPS = (
    "ravdess/audio/03-01-01-01-01-01-02.wav",
    "ravdess/audio/03-01-05-01-01-01-02.wav",
    "ravdess/audio/03-01-06-01-01-01-03.wav",
)
# Measured on these clips (docs/replay.md): MediaPipe finds a face in every sampled frame.
MIN_FACE_RATE = 0.9
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def models(golden_dir: Path, face_asset: Path, tmp_path_factory: pytest.TempPathFactory) -> ReplayModels:
    bundle = load_bundle(import_hoovik(golden_dir / "artifacts", tmp_path_factory.mktemp("bundle") / "golden"))
    extractor, model = untrained_wav2vec2("small")
    return ReplayModels(
        predictor=Predictor(bundle, torch_threads=1),
        norm=bundle.norm,
        audio=AudioEmbedder.from_model(extractor, model),
        make_face_extractor=lambda: FaceFeatureExtractor(face_asset),
        bundle=BundleInfo(bundle.bundle_id, False),
        description={"bundleId": bundle.bundle_id, "audioModel": "untrained:small"},
    )


@pytest.fixture(scope="module")
def media(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Recordings the shared media lacks, generated from real clips (faces and speech stay real)."""
    out = tmp_path_factory.mktemp("media")
    ang = media_dir / "crema-d" / "1001_DFA_ANG_XX.flv"
    hap = media_dir / "crema-d" / "1001_DFA_HAP_XX.flv"
    return {
        "video_only": write_recording(ang, out / "video-only.mkv", audio=False),
        "audio_gap": write_recording(hap, out / "audio-gap.mkv", loops=2, audio_gap=Gap(1.0, 2.2)),
        "video_gap": write_recording(hap, out / "video-gap.mp4", loops=2, video_gap=Gap(1.0, 2.2)),
        "webm": write_recording(ang, out / "clip.webm", width=320, height=240),
    }


def _real_inputs(media_dir: Path) -> list[ReplayInput]:
    inputs, errors = resolve_inputs([media_dir / name for name in (*FACE_CLIPS, *WAV_CLIPS)])
    assert not errors
    return inputs


@pytest.fixture(scope="module")
def real_run(models: ReplayModels, media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> ReplayRun:
    return replay(_real_inputs(media_dir), EngineConfig(), models, out_dir=tmp_path_factory.mktemp("real-run"))


def _by_id(run: ReplayRun) -> dict[str, ParticipantReplay]:
    return {p.participant_id: p for p in run.participants}


def _profiles(p: ParticipantReplay) -> list[str | None]:
    return [s.profile for s in p.steps]


def _runs_of(values: list[Any]) -> list[Any]:
    """Collapse repeats: [a, a, b, b, a] -> [a, b, a]."""
    out: list[Any] = []
    for v in values:
        if not out or out[-1] != v:
            out.append(v)
    return out


# -- the shared clips --------------------------------------------------------------------------


def test_every_clip_yields_results(real_run: ReplayRun) -> None:
    assert not real_run.errors
    for p in real_run.participants:
        assert p.status == "ok", p.error
        # One step per 0.3 s of media; a step gives a result whenever a modality is live.
        expected_steps = int((p.end_s - p.origin) / 0.3 + 1e-9)
        assert len(p.steps) == expected_steps, p.participant_id
        # Steps without a result are those with no live modality: here only the non-speech
        # lead-in and tail of the audio-only clips, which the VAD gates.
        assert len(p.results) >= len(p.steps) // 2, (p.participant_id, _profiles(p))
        for r in p.results:
            assert r.error is None and r.probs is not None
            assert abs(sum(r.probs) - 1.0) < 1e-3
            assert r.media_time is not None and r.media_time <= r.ts_ms / 1000 + 1e-9


def test_faces_found_on_clips_that_show_faces(real_run: ReplayRun) -> None:
    by_id = _by_id(real_run)
    for name in FACE_CLIPS:
        p = by_id[Path(name).stem]
        sampled, found = p.counters["frames_sampled"], p.counters.get("faces", 0)
        # As live: each step samples the newest frame (at most one per step, 3.33 fps).
        assert sampled == len(p.steps), p.counters
        assert found / sampled >= MIN_FACE_RATE, (name, found, sampled)
    for name in WAV_CLIPS:
        assert by_id[Path(name).stem].counters.get("frames_sampled", 0) == 0


def test_profiles_follow_the_streams_present(real_run: ReplayRun) -> None:
    by_id = _by_id(real_run)
    for name in WAV_CLIPS:
        p = by_id[Path(name).stem]
        assert {r.modality for r in p.results} == {"audio_only"}
        assert set(_profiles(p)) <= {"audio_only", None}
    for name in FACE_CLIPS:
        p = by_id[Path(name).stem]
        modalities = [r.modality for r in p.results]
        assert modalities.count("both") >= len(modalities) // 2, modalities
        # Audio only ever adds to video here: the face is live from the first step on.
        assert set(modalities) <= {"both", "video_only"}


def test_outputs_hold_the_same_results(real_run: ReplayRun) -> None:
    assert real_run.outputs is not None
    lines = real_run.outputs.timeline_jsonl.read_text().splitlines()
    messages = [json.loads(line) for line in lines]
    assert len(messages) == real_run.results
    # The live result schema, with the media clock: ts ascends over the whole session.
    expected = {r.participant_id: r for p in real_run.participants for r in p.results if r.seq == 1}
    first = next(m for m in messages if m["participantId"] == "1001_DFA_ANG_XX")
    assert first == expected["1001_DFA_ANG_XX"].to_message()
    assert [m["ts"] for m in messages] == sorted(m["ts"] for m in messages)
    assert {m["event"] for m in messages} == {"emotion.result"}
    with real_run.outputs.timeline_csv.open() as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == len(messages) + 1
    assert [r[0] for r in rows[1:]] == [m["participantId"] for m in messages]
    assert [float(r[CSV_COLUMNS.index("p_happy")]) for r in rows[1:]] == [
        m["result"]["probs"]["happy"] for m in messages
    ]
    summary = json.loads(real_run.outputs.summary_json.read_text())
    assert summary["errors"] == []
    assert summary["clock"] == "media"
    for s in summary["participants"]:
        p = _by_id(real_run)[s["participantId"]]
        assert s["results"] == len(p.results)
        assert sum(s["profileSeconds"].values()) == pytest.approx(0.3 * len(p.steps), abs=1e-6)
        assert sum(s["emotionCounts"].values()) == len(p.results)
        assert s["dominantEmotion"] == max(s["emotionCounts"], key=lambda k: s["emotionCounts"][k])
        assert s["anomalyRate"] == pytest.approx(sum(1 for r in p.results if r.anomaly) / len(p.results), abs=1e-4)
    html = real_run.outputs.report_html.read_text()
    assert html.count("<svg") == len(real_run.participants)
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html


# -- generated recordings ---------------------------------------------------------------------


def test_video_only_file_runs_video_only(models: ReplayModels, media: dict[str, Path]) -> None:
    run = replay([ReplayInput(media["video_only"], "vo")], EngineConfig(), models)
    (p,) = run.participants
    assert p.status == "ok", p.error
    assert p.results and {r.modality for r in p.results} == {"video_only"}
    assert p.counters.get("audio_windows", 0) == 0 and p.counters["faces"] > 0


def test_audio_gap_switches_profile_like_a_live_stream(models: ReplayModels, media: dict[str, Path]) -> None:
    cfg = EngineConfig()
    run = replay([ReplayInput(media["audio_gap"], "gap")], cfg, models)
    (p,) = run.participants
    assert p.status == "ok", p.error
    # From 0.6 s on (the first window, 0.0-0.3 s, is not speech to the VAD).
    assert _runs_of([r.modality for r in p.results if r.ts_ms >= 600]) == ["both", "video_only", "both"]
    # The switch happens exactly when the bot.pipeline.freshness rule says: the audio stream's last chunk
    # (the one that started before 1.0 s) is older than modality_stale_s at that step.
    last_chunk_end = _last_audio_arrival_before(media["audio_gap"], 1.0 + 0.1)
    first_video_only = next(s.time for s in p.steps if s.profile == "video_only" and s.time >= 0.6)
    last_both = max(s.time for s in p.steps if s.profile == "both" and s.time < first_video_only)
    assert last_both - last_chunk_end <= cfg.modality_stale_s < first_video_only - last_chunk_end
    back = next(s.time for s in p.steps if s.profile == "both" and s.time > first_video_only)
    assert 2.2 < back <= 2.2 + cfg.result_interval_s + 0.05


def test_video_gap_switches_to_audio_only(models: ReplayModels, media: dict[str, Path]) -> None:
    run = replay([ReplayInput(media["video_gap"], "vgap")], EngineConfig(), models)
    (p,) = run.participants
    assert p.status == "ok", p.error
    assert _runs_of([r.modality for r in p.results if r.ts_ms >= 600]) == ["both", "audio_only", "both"]
    assert p.counters["frames_sampled"] < len(p.steps)  # no frame to sample while the camera is stale


def _last_audio_arrival_before(path: Path, t: float) -> float:
    reader = MediaReader(probe(path))
    arrivals = [e.arrival for e in reader.events() if not isinstance(e, VideoEvent) and e.arrival <= t]
    return max(arrivals)


# -- determinism ------------------------------------------------------------------------------


def test_two_runs_are_byte_identical(
    models: ReplayModels, media_dir: Path, media: dict[str, Path], tmp_path: Path
) -> None:
    inputs = [*_real_inputs(media_dir)[:2], ReplayInput(media["audio_gap"], "gap"), ReplayInput(media["webm"], "w")]
    a = replay(inputs, EngineConfig(), models, out_dir=tmp_path / "a", jobs=1)
    b = replay(inputs, EngineConfig(), models, out_dir=tmp_path / "b", jobs=4)
    assert a.outputs is not None and b.outputs is not None
    assert a.results > 0
    for name in ("timeline.jsonl", "timeline.csv", "summary.json", "report.html"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    # A file's results do not depend on the other files of the run (batches never mix files).
    alone = replay(inputs[2:3], EngineConfig(), models)
    assert [r.to_json() for r in alone.participants[0].results] == [r.to_json() for r in b.participants[2].results]


# -- bad files -----------------------------------------------------------------------------------


def test_bad_files_get_clear_errors_and_others_are_written(
    models: ReplayModels, media_dir: Path, media: dict[str, Path], tmp_path: Path
) -> None:
    good = media_dir / WAV_CLIPS[0]
    data = media["webm"].read_bytes()
    truncated = tmp_path / "truncated.webm"
    truncated.write_bytes(data[: len(data) // 2])
    mp4 = tmp_path / "truncated.mp4"
    mp4.write_bytes(media["video_gap"].read_bytes()[:20000])
    not_media = tmp_path / "notes.mp4"
    not_media.write_text("this is not a video\n" * 50)
    subtitles = tmp_path / "subtitles.mkv"
    subtitles.write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n\n")
    wrong_ext = tmp_path / "clip.txt"
    wrong_ext.write_bytes(good.read_bytes())
    inputs, input_errors = resolve_inputs([truncated, mp4, not_media, subtitles, wrong_ext, good])
    assert [e.path for e in input_errors] == [wrong_ext]
    assert "unsupported extension '.txt'" in input_errors[0].message
    run = replay(inputs, EngineConfig(), models, out_dir=tmp_path / "out", input_errors=input_errors)
    by_id = _by_id(run)
    assert by_id["truncated"].status == "partial"
    assert "truncated" in (by_id["truncated"].error or "") and by_id["truncated"].results
    assert by_id["truncated-2"].status == "error"
    assert "not a readable media file" in (by_id["truncated-2"].error or "")
    assert "not a readable media file" in (by_id["notes"].error or "")
    assert "no usable stream" in (by_id["subtitles"].error or "")
    good_id = Path(WAV_CLIPS[0]).stem
    assert by_id[good_id].status == "ok" and by_id[good_id].results
    assert run.outputs is not None
    summary = json.loads(run.outputs.summary_json.read_text())
    assert len(summary["errors"]) == 5
    assert all(e["error"] and e["file"] for e in summary["errors"])
    ids = {json.loads(line)["participantId"] for line in run.outputs.timeline_jsonl.read_text().splitlines()}
    assert ids == {good_id, "truncated"}


# -- the live engine, step for step ------------------------------------------------------------


async def _drive_live_engine(path: Path, config: EngineConfig, models: ReplayModels) -> list[EmotionResult]:
    """Feed a file to the live Engine on a media clock: arrivals at their times, steps when due.

    Replay assumes zero processing latency (see bot/replay/timeline.py), so the engine here may
    wait as long as its face takes (``face_wait_s``), and it settles before the clock moves on.
    """
    reader = MediaReader(probe(path))
    events = list(reader.events())
    origin = max(0.0, reader.first_time or 0.0)
    now = [origin]
    results: list[EmotionResult] = []
    engine = await asyncio.to_thread(
        Engine,
        config,
        predictor=models.predictor,
        features=models.plan,
        make_face_extractor=models.make_face_extractor,
        audio_embedder=models.audio,
        bundle=models.bundle,
        on_result=results.append,
        clock=lambda: now[0],
        wall_clock=lambda: now[0],
        face_wait_s=60.0,
    )
    try:
        st = engine.add_participant("p")

        async def step_at(t: float) -> None:
            now[0] = t
            engine.tick()
            while engine._steps or st.face_in_flight:
                await asyncio.sleep(0.001)

        for ev in events:
            while st.next_due < ev.arrival:
                await step_at(st.next_due)
            now[0] = ev.arrival
            if isinstance(ev, VideoEvent):
                engine.on_video_frame("p", ev.frame, ev.arrival)
            else:
                engine.on_audio("p", ev.samples, ev.arrival)
        last = max(e.arrival for e in events)
        while st.next_due <= last:
            await step_at(st.next_due)
    finally:
        await engine.stop()
    return results


@pytest.fixture(scope="module")
def starter_models(face_asset: Path) -> ReplayModels:
    """The shipped starter bundle, loaded exactly as ``hoovik-bot replay`` loads it without --bundle."""
    from bot.config import BotConfig
    from bot.runtime import build_runtime

    cfg = BotConfig()
    cfg.models.face_asset = str(face_asset)
    return ReplayModels.from_runtime(build_runtime(cfg))


@pytest.mark.parametrize(
    ("clip", "family"),
    [("crema-d/1001_DFA_HAP_XX.flv", "reference"), ("audio_gap", "reference"), ("audio_gap", "starter")],
)
def test_replay_matches_the_live_engine(
    models: ReplayModels,
    starter_models: ReplayModels,
    media_dir: Path,
    media: dict[str, Path],
    clip: str,
    family: str,
) -> None:
    models = starter_models if family == "starter" else models
    # Batches of one on both sides, so even the last bits of every forward agree.
    cfg = EngineConfig(audio_max_batch=1, inference_max_batch=1)
    path = media[clip] if clip in media else media_dir / clip
    live = asyncio.run(_drive_live_engine(path, cfg, models))
    run = replay([ReplayInput(path, "p")], cfg, models)
    ours = run.participants[0].results
    assert len(live) == len(ours) > 5

    def comparable(r: EmotionResult) -> dict[str, Any]:
        # The engine truncates epoch ms (int()), replay rounds the media clock: ts differs by <= 1.
        # processingMs is live only (the step's own duration on the wall clock).
        msg = r.to_message()
        return {k: v for k, v in msg.items() if k not in ("ts", "capturedAt", "processingMs")}

    for a, b in zip(live, ours, strict=True):
        assert comparable(a) == comparable(b)
        assert abs(a.ts_ms - b.ts_ms) <= 1


@pytest.mark.parametrize(
    ("clip", "emotion"),
    [
        ("crema-d/1001_DFA_ANG_XX.flv", "angry"),
        ("crema-d/1001_DFA_HAP_XX.flv", "happy"),
        ("ravdess/01-01-01-01-01-01-01.mp4", "neutral/calm"),
    ],
)
def test_starter_bundle_reads_the_clips_emotion(
    starter_models: ReplayModels, media_dir: Path, clip: str, emotion: str
) -> None:
    """Replay on the shipped starter bundle: the clip's emotion is the majority of its results."""
    run = replay([ReplayInput(media_dir / clip, "p")], EngineConfig(), starter_models)
    results = run.participants[0].results
    assert results and all(r.trained and r.bundle_id.startswith("hb-starter-") for r in results)
    labels = [r.emotion for r in results]
    assert max(set(labels), key=labels.count) == emotion, labels


# -- the command line ----------------------------------------------------------------------------


def test_cli_with_a_manifest(
    media_dir: Path, media: dict[str, Path], golden_dir: Path, face_asset: Path, tmp_path: Path
) -> None:
    bundle_dir = import_hoovik(golden_dir / "artifacts", tmp_path / "bundle")
    manifest = tmp_path / "session.json"
    manifest.write_text(
        json.dumps(
            {
                "participants": [
                    {"file": str(media_dir / FACE_CLIPS[0]), "participant": "alice", "name": "Alice"},
                    {"file": str(media["video_only"]), "participant": "bob", "offset": 1.5},
                ]
            }
        )
    )
    out = tmp_path / "out"
    code = cli_main(
        [
            "replay",
            str(manifest),
            "--out",
            str(out),
            "--quiet",
            "--bundle",
            str(bundle_dir),
            "--audio-model",
            "untrained:small",
            "--face-asset",
            str(face_asset),
        ]
    )
    assert code == 0
    messages = [json.loads(line) for line in (out / "timeline.jsonl").read_text().splitlines()]
    bob = [m for m in messages if m["participantId"] == "bob"]
    alice = [m for m in messages if m["participantId"] == "alice"]
    assert alice and bob
    # bob's file starts 1.5 s into the session; his first step is one interval after that.
    assert bob[0]["ts"] == round((1.5 + 0.3) * 1000) and bob[0]["mediaTime"] >= 1.5
    assert alice[0]["ts"] == 300
    summary = json.loads((out / "summary.json").read_text())
    assert [p["participantId"] for p in summary["participants"]] == ["alice", "bob"]
    assert summary["participants"][0]["name"] == "Alice"


def test_cli_exit_status_reports_bad_inputs(tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("nothing")
    assert cli_main(["replay", str(bad), "--out", str(tmp_path / "out"), "--quiet"]) == 2


# -- the report in a browser ---------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install playwright==1.65.2 (never `playwright install`)")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium chromium-driver")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def test_report_renders_in_headless_chromium(real_run: ReplayRun, browser: Any) -> None:
    assert real_run.outputs is not None
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(real_run.outputs.report_html.resolve().as_uri())
    page.wait_for_load_state("load")
    assert problems == []
    assert all(url.startswith("file://") for url in requests), requests  # nothing from the network
    n = len(real_run.participants)
    assert page.locator("section.participant svg").count() == n
    assert page.locator("table.summary tbody tr").count() == n
    assert page.locator("polyline.series").count() == 6 * n
    # The charts have real size and the hover read-out works.
    box = page.locator("section.participant svg").first.bounding_box()
    assert box is not None and box["width"] > 600 and box["height"] > 150
    page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.4)
    tip = page.locator(".tip").first
    assert tip.is_visible()
    assert "t = " in tip.inner_text() and "profile" in tip.inner_text()
    # Legend toggles hide a class's lines in every chart.
    page.locator('#legend .item[data-class="happy"]').click()
    assert page.locator('polyline.series.hidden[data-class="happy"]').count() == n
    page.locator('#legend .item[data-class="happy"]').click()
    page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.4)  # show the read-out
    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    shot = artifacts / "replay-report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    page.close()


def test_report_of_errors_and_offsets_renders(
    models: ReplayModels, media: dict[str, Path], browser: Any, tmp_path: Path
) -> None:
    inputs = [
        ReplayInput(media["audio_gap"], "gap", "Audio gap"),
        replace(ReplayInput(media["video_only"], "late"), offset_s=2.0),
    ]
    bad = tmp_path / "broken.mkv"
    bad.write_bytes(b"\x1a\x45\xdf\xa3" + b"\x00" * 100)
    inputs.append(ReplayInput(bad, "broken"))
    # Playwright's sync API keeps an event loop running on this thread, so replay on another one.
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(replay, inputs, EngineConfig(), models, out_dir=tmp_path / "out").result()
    assert run.outputs is not None
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(run.outputs.report_html.resolve().as_uri())
    assert errors == []
    assert page.locator(".errors li").count() == 1
    assert "broken.mkv" in page.locator(".errors").inner_text()
    assert page.locator("section.participant").count() == 3
    shot = REPO / "test-artifacts" / "replay-report-errors.png"
    shot.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    page.close()
