"""``hoovik-bot train extract`` on the real shared clips, through the bot's own extractors.

Media: the two CREMA-D FLVs (also linked under two more actor ids, so the corpus has the three
actors a split needs), the RAVDESS audio-visual MP4 and the twelve RAVDESS WAVs, plus a file of
garbage (must be skipped with its reason) and a RAVDESS "surprised" file (must be dropped).
Audio runs through a tiny Wav2Vec2 with the production width (1024); faces through MediaPipe with
the shared asset.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from bot.cli import main
from models.audio import AudioEmbedder, pad_or_truncate, windows_for_times
from models.constants import AUDIO_DIM, CLASS_NAMES, FACE_DIM, SEQ_LEN
from models.face import FaceFeatureExtractor
from models.training.dataset import FeatureDataset, compute_norm_stats, load_dataset
from models.training.extract import frame_times
from models.training.media import decode_audio, frames_at, probe
from models.training.splits import check_actor_disjoint

GARBAGE = "03-01-05-02-02-02-03.wav"
SURPRISED = "03-01-08-01-01-01-02.wav"


@pytest.fixture(scope="module")
def corpora(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("corpora")
    ravdess, crema = root / "RAVDESS", root / "CREMA-D"
    (ravdess / "Actor_01").mkdir(parents=True)
    (ravdess / "audio").mkdir()
    crema.mkdir()
    (ravdess / "Actor_01" / "01-01-01-01-01-01-01.mp4").symlink_to(media_dir / "ravdess" / "01-01-01-01-01-01-01.mp4")
    for wav in sorted((media_dir / "ravdess" / "audio").glob("*.wav")):
        (ravdess / "audio" / wav.name).symlink_to(wav)
    (ravdess / "audio" / SURPRISED).symlink_to(media_dir / "ravdess" / "audio" / "03-01-01-01-01-01-02.wav")
    (ravdess / "audio" / GARBAGE).write_bytes(np.random.default_rng(0).bytes(4096))
    (ravdess / "audio" / "README.txt").write_text("not media")
    for actor in ("1001", "1002", "1003"):
        for emo in ("ANG", "HAP"):
            (crema / f"{actor}_DFA_{emo}_XX.flv").symlink_to(media_dir / "crema-d" / f"1001_DFA_{emo}_XX.flv")
    return ravdess, crema


@pytest.fixture(scope="module")
def extracted(
    corpora: tuple[Path, Path], face_asset: Path, tiny_wav2vec2_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("extract") / "dataset"
    ravdess, crema = corpora
    argv = [
        "train",
        "extract",
        "--ravdess",
        str(ravdess),
        "--crema-d",
        str(crema),
        "--out",
        str(out),
        "--audio-model",
        str(tiny_wav2vec2_dir),
        "--face-asset",
        str(face_asset),
        "--workers",
        "2",
        "--quiet",
    ]
    return out, argv


def _row(ds: FeatureDataset, suffix: str) -> int:
    hits = [i for i, c in enumerate(ds.clip_id.tolist()) if c.endswith(suffix)]
    assert len(hits) == 1, suffix
    return hits[0]


def test_extract_real_clips(
    extracted: tuple[Path, list[str]], caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    out, argv = extracted
    with caplog.at_level(logging.WARNING):
        assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    ds = load_dataset(out)
    assert len(ds) == 1 + 12 + 6
    assert summary["extraction"]["extracted"] == len(ds) and summary["extraction"]["failed"] == 1
    assert ds.face.shape == (len(ds), SEQ_LEN, FACE_DIM) and ds.face.dtype == np.float32
    assert ds.audio.shape == (len(ds), SEQ_LEN, AUDIO_DIM)
    assert ds.face_mask.shape == ds.audio_mask.shape == (len(ds), SEQ_LEN)

    # Labels, including RAVDESS 06 → fearful and 07 → disgust (the original swapped them).
    expect = {
        "03-01-06-01-01-01-02.wav": ("fearful", "2"),
        "03-01-06-01-01-01-03.wav": ("fearful", "3"),
        "03-01-07-01-01-01-02.wav": ("disgust", "2"),
        "03-01-07-01-01-01-03.wav": ("disgust", "3"),
        "03-01-01-01-01-01-02.wav": ("neutral/calm", "2"),
        "03-01-03-01-01-01-03.wav": ("happy", "3"),
        "03-01-04-01-01-01-02.wav": ("sad", "2"),
        "03-01-05-01-01-01-03.wav": ("angry", "3"),
        "01-01-01-01-01-01-01.mp4": ("neutral/calm", "1"),
        "1001_DFA_ANG_XX.flv": ("angry", "2001"),
        "1002_DFA_HAP_XX.flv": ("happy", "2002"),
        "1003_DFA_ANG_XX.flv": ("angry", "2003"),
    }
    for suffix, (label, actor) in expect.items():
        i = _row(ds, suffix)
        assert CLASS_NAMES[int(ds.label[i])] == label, suffix
        assert ds.actor[i] == actor, suffix

    # Masks and profiles: WAVs are audio-only; the MP4 and FLVs have faces in every sampled frame.
    for i, clip in enumerate(ds.clip_id.tolist()):
        if clip.endswith(".wav"):
            assert ds.profile[i] == 0 and ds.face_mask[i].sum() == 0 and not ds.face[i].any()
            assert ds.audio_mask[i].sum() >= 8, clip
        else:
            assert ds.profile[i] == 2, clip
            assert ds.face_mask[i].sum() == SEQ_LEN, clip
            assert ds.audio_mask[i].sum() >= 8, clip
            # Landmarks are translated to the nose tip (list position 66 → dims 132, 133).
            assert np.all(ds.face[i][:, 132:134] == 0)
    # Rows with mask 0 are exactly zero; valid audio rows are real embeddings.
    assert not ds.audio[ds.audio_mask == 0].any()
    assert np.all(np.abs(ds.audio[ds.audio_mask == 1]).sum(axis=1) > 0)

    # The garbage file was skipped with its reason, logged and recorded; "surprised" was dropped.
    skipped = {Path(s["path"]).name: s for s in ds.meta["skipped"]}
    assert skipped[GARBAGE]["kind"] == "error" and skipped[GARBAGE]["reason"]
    assert skipped[SURPRISED]["kind"] == "dropped" and "surprised" in skipped[SURPRISED]["reason"]
    assert any(GARBAGE in r.getMessage() and "skipping" in r.getMessage() for r in caplog.records)

    # Splits: actor-disjoint, every corpus in every split; norm stats from the train split only.
    check_actor_disjoint(ds.actor.tolist(), ds.corpus.tolist(), ds.split)
    for corpus in ("ravdess", "crema-d"):
        assert set(ds.split[ds.corpus == corpus].tolist()) == {0, 1, 2}
    ref = compute_norm_stats(ds.face, ds.face_mask, ds.audio, ds.audio_mask, ds.indices("train"))
    assert np.array_equal(ref.face_mean, ds.norm.face_mean) and np.array_equal(ref.audio_std, ds.norm.audio_std)


def test_features_equal_the_bot_extractors(
    extracted: tuple[Path, list[str]], corpora: tuple[Path, Path], face_asset: Path, tiny_wav2vec2_dir: Path
) -> None:
    """One implementation: a clip's stored vectors are what the live extractors give for its frames."""
    out, argv = extracted
    if not (out / "dataset.npz").exists():
        assert main(argv) == 0
    ds = load_dataset(out)
    path = corpora[1] / "1001_DFA_HAP_XX.flv"
    i = _row(ds, "1001_DFA_HAP_XX.flv")
    times = frame_times(probe(path).video_duration_s or 0.0)
    frames = frames_at(path, times.tolist())
    with FaceFeatureExtractor(face_asset) as face:
        for k in (0, 5, 9):
            vec = face.extract(frames[k]).vector
            assert vec is not None
            np.testing.assert_array_equal(ds.face[i, k], vec)
    embedder = AudioEmbedder(str(tiny_wav2vec2_dir))
    windows = windows_for_times(pad_or_truncate(decode_audio(path)), times)
    emb, mask = embedder.embed_slots(windows)
    np.testing.assert_array_equal(ds.audio_mask[i], mask)
    np.testing.assert_allclose(ds.audio[i], emb, rtol=1e-5, atol=1e-5)


def test_resume_uses_the_cache(extracted: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    out, argv = extracted
    if not (out / "dataset.npz").exists():
        assert main(argv) == 0
    first = load_dataset(out)
    capsys.readouterr()
    assert main(argv) == 0
    stats = json.loads(capsys.readouterr().out)["extraction"]
    assert stats["extracted"] == 0 and stats["cached"] == len(first) and stats["failed"] == 1
    assert load_dataset(out).content_hash() == first.content_hash()


def test_one_actor_corpus_is_refused(
    extracted: tuple[Path, list[str]],
    media_dir: Path,
    tiny_wav2vec2_dir: Path,
    face_asset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The real CREMA-D files alone (one actor) cannot be split: a clear error, no dataset."""
    out, _ = extracted
    argv = [
        "train",
        "extract",
        "--crema-d",
        str(media_dir / "crema-d"),
        "--out",
        str(tmp_path / "ds"),
        "--audio-model",
        str(tiny_wav2vec2_dir),
        "--face-asset",
        str(face_asset),
        "--quiet",
        "--cache-dir",
        str(out / "cache"),
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "corpus 'crema-d' has 1 actor(s)" in err
    assert not (tmp_path / "ds" / "dataset.npz").exists()
