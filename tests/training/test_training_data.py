"""Labels, manifests, splits, the dataset file and the per-clip sequence rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.constants import CLASS_NAMES, FACE_DIM
from models.training.dataset import load_dataset, save_dataset
from models.training.extract import fill_face_sequence, frame_times, resolve_modality
from models.training.labels import (
    ClipSpec,
    SkippedClip,
    dedupe,
    parse_crema_d_name,
    parse_label,
    parse_ravdess_name,
    read_manifest,
)
from models.training.media import ClipError
from models.training.splits import DatasetError, actor_disjoint_splits, check_actor_disjoint, check_trainable
from models.training.synthetic import SyntheticSpec, make_synthetic_dataset


def _spec(name: str) -> ClipSpec:
    parsed = parse_ravdess_name(Path(name))
    assert isinstance(parsed, ClipSpec), parsed
    return parsed


def test_ravdess_labels_follow_the_ravdess_convention() -> None:
    got = {code: CLASS_NAMES[_spec(f"03-01-{code}-01-01-01-02.wav").label] for code in ("01", "02", "03", "04", "05")}
    assert got == {"01": "neutral/calm", "02": "neutral/calm", "03": "happy", "04": "sad", "05": "angry"}
    # 06 is fearful and 07 disgust in RAVDESS; the original swapped them.
    assert CLASS_NAMES[_spec("03-01-06-01-01-01-02.wav").label] == "fearful"
    assert CLASS_NAMES[_spec("03-01-07-01-01-01-02.wav").label] == "disgust"
    dropped = parse_ravdess_name(Path("03-01-08-01-01-01-02.wav"))
    assert isinstance(dropped, SkippedClip) and dropped.kind == "dropped"
    assert isinstance(parse_ravdess_name(Path("03-01-09-01-01-01-02.wav")), SkippedClip)
    assert isinstance(parse_ravdess_name(Path("holiday.mp4")), SkippedClip)


def test_ravdess_modality_and_actor() -> None:
    assert _spec("01-01-05-01-01-01-07.mp4").modality == "both"
    assert _spec("02-01-05-01-01-01-07.mp4").modality == "video_only"
    spec = _spec("03-01-05-01-01-01-24.wav")
    assert spec.modality == "audio_only" and spec.actor == "24" and spec.corpus == "ravdess"


def test_crema_d_names() -> None:
    spec = parse_crema_d_name(Path("/x/VideoFlash/1091_IEO_FEA_HI.flv"), Path("/x"))
    assert isinstance(spec, ClipSpec)
    assert CLASS_NAMES[spec.label] == "fearful" and spec.actor == "2091" and spec.modality is None
    assert spec.clip_id == "crema-d/VideoFlash/1091_IEO_FEA_HI.flv"
    for code, name in {"ANG": "angry", "DIS": "disgust", "HAP": "happy", "SAD": "sad", "NEU": "neutral/calm"}.items():
        s = parse_crema_d_name(Path(f"1001_DFA_{code}_XX.wav"))
        assert isinstance(s, ClipSpec) and CLASS_NAMES[s.label] == name
    assert isinstance(parse_crema_d_name(Path("1001_DFA_XYZ_XX.wav")), SkippedClip)


def test_manifest(tmp_path: Path) -> None:
    (tmp_path / "clips").mkdir()
    csv = tmp_path / "mine.csv"
    csv.write_text(
        "path,label,actor,modality\n"
        "clips/a.mp4,Angry,spk1,\n"
        "/abs/b.wav,fear,spk2,audio\n"
        "clips/c.mp4,4,spk3,both\n"
        "clips/d.mp4,bored,spk3,\n"
        "clips/e.mp4,happy,,\n"
    )
    specs, skipped = read_manifest(csv)
    assert [(s.label, s.actor, s.modality, s.corpus) for s in specs] == [
        (0, "spk1", None, "mine"),
        (1, "spk2", "audio_only", "mine"),
        (4, "spk3", "both", "mine"),
    ]
    assert specs[0].path == tmp_path / "clips" / "a.mp4"
    assert len(skipped) == 2 and "bored" in skipped[0].reason and "mine.csv:5" in skipped[0].reason
    bad = tmp_path / "bad.csv"
    bad.write_text("file,label\nx.mp4,angry\n")
    with pytest.raises(ValueError, match="lacks column"):
        read_manifest(bad)
    with pytest.raises(ValueError, match="duplicate clip id"):
        dedupe([specs[0], specs[0]])
    assert parse_label("neutral") == parse_label("calm") == parse_label(5) == 5


def test_splits_are_actor_disjoint_and_seeded() -> None:
    rng = np.random.default_rng(0)
    for trial in range(30):
        n_corpora = int(rng.integers(1, 4))
        corpora, actors = [], []
        for c in range(n_corpora):
            n_actors = int(rng.integers(3, 40))
            draws = [*range(n_actors), *rng.integers(0, n_actors, int(rng.integers(0, 4 * n_actors))).tolist()]
            for a in draws:
                corpora.append(f"c{c}")
                actors.append(str(a))
        split = actor_disjoint_splits(actors, corpora, seed=trial)
        check_actor_disjoint(actors, corpora, split)
        for c in set(corpora):
            sel = np.asarray(corpora) == c
            by_split = [set(np.asarray(actors)[sel & (split == s)].tolist()) for s in (0, 1, 2)]
            assert all(by_split), "every split gets actors from every corpus"
            assert not (by_split[0] & by_split[1] or by_split[0] & by_split[2] or by_split[1] & by_split[2])
            n = sum(len(b) for b in by_split)
            assert abs(len(by_split[0]) - 0.7 * n) <= 2
        assert np.array_equal(split, actor_disjoint_splits(actors, corpora, seed=trial))
    many = [str(i) for i in range(40) for _ in range(3)]
    assert not np.array_equal(
        actor_disjoint_splits(many, ["x"] * len(many), 1), actor_disjoint_splits(many, ["x"] * len(many), 2)
    )


def test_split_errors() -> None:
    with pytest.raises(DatasetError, match="has 2 actor"):
        actor_disjoint_splits(["a", "b", "a"], ["x", "x", "x"], seed=0)
    with pytest.raises(DatasetError, match="more than one split"):
        check_actor_disjoint(["a", "a"], ["x", "x"], np.array([0, 1]))
    labels = np.array([0, 1, 2, 3, 4, 0, 1])
    split = np.array([0, 0, 0, 0, 0, 1, 2])
    with pytest.raises(DatasetError, match="class 'neutral/calm' has no training samples"):
        check_trainable(labels, split, ["a"] * 5 + ["b", "c"], ["x"] * 7)
    with pytest.raises(DatasetError, match="the test split is empty"):
        check_trainable(np.arange(6), np.zeros(6, int), list("abcdef"), ["x"] * 6)


def test_dataset_round_trip_and_hash(tmp_path: Path) -> None:
    ds = make_synthetic_dataset(SyntheticSpec(actors_per_corpus=3, clips_per_actor_class=1))
    save_dataset(ds, tmp_path / "ds")
    back = load_dataset(tmp_path / "ds")
    assert back.content_hash() == ds.content_hash() == back.meta["content_hash"]
    assert back.meta["format"] == "hoovik-bot-dataset" and back.meta["format_version"] == 1
    assert np.array_equal(back.face, ds.face) and back.actor.tolist() == ds.actor.tolist()
    # Norm stats come from the train split's valid frames only, std + 1e-6.
    train = ds.indices("train")
    valid = ds.face[train][ds.face_mask[train] == 1].astype(np.float64)
    np.testing.assert_allclose(ds.norm.face_mean, valid.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ds.norm.face_std, valid.std(axis=0) + 1e-6, rtol=1e-5, atol=1e-6)
    # Normalised rows with mask 0 are zero, as the live assembly makes them.
    xf, xa, fm, am = ds.normalised()
    assert not xf[fm == 0].any() and not xa[am == 0].any()
    # A tampered file is refused.
    with np.load(tmp_path / "ds" / "dataset.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["label"] = (arrays["label"] + 1) % 6
    np.savez(tmp_path / "ds" / "dataset.npz", **arrays)
    with pytest.raises(ValueError, match="content hash"):
        load_dataset(tmp_path / "ds")


def test_frame_times_and_face_fill() -> None:
    np.testing.assert_allclose(frame_times(2.0), np.linspace(0, 1.8, 10))
    v = [np.full(FACE_DIM, float(i), np.float32) for i in range(10)]
    x, m = fill_face_sequence([None, None, v[2], None, v[4], None, None, None, None, v[9]])
    assert m.tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 1, 1]
    assert [float(r[0]) for r in x] == [0, 0, 2, 2, 4, 4, 4, 4, 4, 9]
    x, m = fill_face_sequence([None] * 10)
    assert not m.any() and not x.any()


def test_resolve_modality() -> None:
    spec = ClipSpec(Path("x.mp4"), "c/x.mp4", 0, "1", "c", None)
    assert resolve_modality(spec, True, True) == "both"
    assert resolve_modality(spec, False, True) == "audio_only"
    video_only = ClipSpec(Path("x.mp4"), "c/x.mp4", 0, "1", "c", "video_only")
    assert resolve_modality(video_only, True, True) == "video_only"  # declared modality wins
    with pytest.raises(ClipError, match="declared video_only"):
        resolve_modality(video_only, False, True)
