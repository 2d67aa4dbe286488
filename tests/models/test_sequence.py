"""Sequence assembly and normalisation against the reference server's predictor inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.sequence import NormStats, RollingSequence, assemble_inputs

# app_mod_flag of the reference server: 0 audio_only, 1 video_only, 2 both.
FACE_ACTIVE = {0: False, 1: True, 2: True}
AUDIO_ACTIVE = {0: True, 1: False, 2: True}


@pytest.fixture(scope="module")
def norm(golden_dir: Path) -> NormStats:
    return NormStats.from_hoovik_npz(golden_dir / "artifacts" / "extracted_dataset" / "norm_stats.npz")


def _bit_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal including the sign of zero: the reference leaves −0.0 in masked rows."""
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_live_cases_reproduce_server_inputs(golden_dir: Path, norm: NormStats) -> None:
    cases = sorted((golden_dir / "cases").glob("live_*"))
    assert len(cases) >= 5
    for case in cases:
        info = json.loads((case / "result.json").read_text())
        flag = info["app_mod_flag"]
        assert info["media_state"] == {"mic": AUDIO_ACTIVE[flag], "camera": FACE_ACTIVE[flag]}
        face, audio = RollingSequence(326), RollingSequence(1024)
        for seq, name in ((face, "raw_face_buffer.npy"), (audio, "raw_audio_buffer.npy")):
            if (case / name).exists():
                for i, vec in enumerate(np.load(case / name)):
                    seq.append(vec, media_time=0.2 * i)
        out = assemble_inputs(face, audio, FACE_ACTIVE[flag], AUDIO_ACTIVE[flag], norm)
        for key, arr in zip(("xf", "xa", "fm", "am"), out, strict=True):
            expected = np.load(case / f"input_{key}.npy")
            assert _bit_equal(arr, expected), f"{case.name}: input_{key} differs"


def test_random_cases_normalise_like_server(golden_dir: Path, norm: NormStats) -> None:
    """Cases with raw_xf/raw_xa (held-out sets) must normalise bit-exactly; always cross-check the formula."""
    for case in sorted((golden_dir / "cases").glob("*/raw_xf.npy")):
        case = case.parent
        fm, am = np.load(case / "input_fm.npy"), np.load(case / "input_am.npy")
        assert _bit_equal(norm.normalise_face(np.load(case / "raw_xf.npy"), fm), np.load(case / "input_xf.npy"))
        assert _bit_equal(norm.normalise_audio(np.load(case / "raw_xa.npy"), am), np.load(case / "input_xa.npy"))

    rng = np.random.default_rng(7)
    raw = norm.face_mean + norm.face_std * rng.standard_normal((10, 326)).astype(np.float32)
    mask = (rng.random(10) < 0.7).astype(np.float32)
    expected = ((raw - norm.face_mean.reshape(1, 1, -1)) / norm.face_std.reshape(1, 1, -1))[0] * mask[:, None]
    assert _bit_equal(norm.normalise_face(raw, mask), expected.astype(np.float32))
    assert np.all(norm.normalise_face(raw, mask)[mask == 0] == 0)


def test_norm_stats_file_and_round_trip(golden_dir: Path, norm: NormStats) -> None:
    with np.load(golden_dir / "artifacts" / "extracted_dataset" / "norm_stats.npz") as data:
        assert _bit_equal(norm.face_std, data["Xf_std"].reshape(-1))  # stored std already includes +1e-6
        assert _bit_equal(norm.audio_mean, data["Xa_mean"].reshape(-1))
    arrays = norm.to_arrays()
    assert set(arrays) == {"face_mean", "face_std", "audio_mean", "audio_std"}
    again = NormStats.from_arrays(arrays)
    for key in arrays:
        assert _bit_equal(getattr(again, key), getattr(norm, key))
    arrays["face_mean"][0] = 123.0  # to_arrays hands out copies
    assert norm.face_mean[0] != 123.0
    with pytest.raises(ValueError):
        NormStats.from_arrays({**arrays, "face_std": np.zeros(326, np.float32)})
    with pytest.raises(ValueError, match="missing"):
        NormStats.from_arrays({"face_mean": arrays["face_mean"]})


def test_norm_stats_npz_missing_key(tmp_path: Path) -> None:
    path = tmp_path / "norm_stats.npz"
    np.savez(path, Xf_mean=np.zeros((1, 1, 326), np.float32))
    with pytest.raises(ValueError, match=r"norm_stats\.npz.*Xf_std"):
        NormStats.from_hoovik_npz(path)


def test_rolling_sequence_front_pads_with_oldest() -> None:
    seq = RollingSequence(3, maxlen=5)
    x, mask = seq.assemble()
    assert x.shape == (5, 3) and not x.any() and not mask.any()
    assert seq.last_time is None and seq.newest_media_time is None
    seq.append([1, 1, 1], 0.0)
    seq.append([2, 2, 2], 0.1, arrival_time=10.0)
    x, mask = seq.assemble()
    assert x.dtype == np.float32 and mask.dtype == np.float32
    np.testing.assert_array_equal(x[:, 0], [1, 1, 1, 1, 2])
    np.testing.assert_array_equal(mask, [0, 0, 0, 1, 1])
    assert seq.newest_media_time == 0.1 and seq.last_time == 10.0
    for i in range(3, 9):
        seq.append([i] * 3, 0.1 * i)
    x, mask = seq.assemble()
    assert len(seq) == 5
    np.testing.assert_array_equal(x[:, 0], [4, 5, 6, 7, 8])
    assert mask.all()
    seq.clear()
    assert len(seq) == 0 and seq.last_time is None


def test_rolling_sequence_copies_and_validates() -> None:
    seq = RollingSequence(4, maxlen=3)
    vec = np.ones(4, np.float32)
    seq.append(vec, 0.0)
    vec[:] = 5
    assert seq.assemble()[0][-1, 0] == 1.0
    with pytest.raises(ValueError):
        seq.append(np.ones(5), 0.1)
    with pytest.raises(ValueError, match="NaN"):
        seq.append([0, 0, np.nan, 0], 0.1)
    with pytest.raises(ValueError, match="NaN"):
        seq.append([0, 0, np.inf, 0], 0.1)
    with pytest.raises(ValueError):
        seq.append(np.ones(4), float("nan"))
    assert len(seq) == 1


def test_inactive_or_empty_modality_is_zero(norm: NormStats) -> None:
    face, audio = RollingSequence(326), RollingSequence(1024)
    face.append(np.asarray(norm.face_mean) + 1, 0.0)
    xf, xa, fm, am = assemble_inputs(face, audio, True, True, norm)  # audio active but empty
    assert not xa.any() and not am.any()
    assert fm.tolist() == [0.0] * 9 + [1.0]
    assert not xf[:9].any() and xf[9].any()
    xf, _, fm, _ = assemble_inputs(face, audio, False, True, norm)
    assert not xf.any() and not fm.any()
    with pytest.raises(ValueError):
        assemble_inputs(audio, face, True, True, norm)
