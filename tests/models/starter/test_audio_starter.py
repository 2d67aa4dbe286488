"""The starter audio model: log-mel extractor, speaker normaliser, head, RAVDESS scan and training."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from models.constants import NUM_CLASSES, SAMPLE_RATE, SEQ_LEN
from models.starter import audio_features as af
from models.starter.audio_head import AudioHead, pool_sequence, pooled_dim
from models.starter.audio_train import extract_files, train_audio, train_on_features, window_ends
from models.starter.ravdess import read_audio, scan_ravdess
from models.starter.speaker_norm import SpeakerNormaliser
from models.vad import SpeechDetector
from tests.conftest import require_shared

RAVDESS = ("training", "ravdess-speech")


@pytest.fixture(scope="module")
def ravdess_dir() -> Path:
    return require_shared(*RAVDESS)


@pytest.fixture(scope="module")
def extractor() -> af.LogMelStatsExtractor:
    return af.LogMelStatsExtractor()


@pytest.fixture(scope="module")
def detector() -> SpeechDetector:
    return SpeechDetector(0.5)


@pytest.fixture(scope="module")
def speech(ravdess_dir: Path) -> np.ndarray:
    return read_audio(ravdess_dir / "Actor_01" / "03-01-05-02-01-01-01.flac")


# -- extractor ------------------------------------------------------------------------------------


def test_extractor_shape_and_determinism(extractor: af.LogMelStatsExtractor, speech: np.ndarray) -> None:
    ws = extractor.window_samples
    assert ws == af.WINDOW_SAMPLES == round(af.WINDOW_S * SAMPLE_RATE)
    assert extractor.dim == af.FEATURE_DIM == len(af.feature_names())
    windows = [speech[s : s + ws] for s in (8000, 16000, 24000)] + [np.zeros(ws, np.float32)]
    out = extractor.embed(windows)
    assert out.shape == (4, af.FEATURE_DIM) and out.dtype == np.float32
    assert np.all(np.isfinite(out))
    again = af.LogMelStatsExtractor().embed(windows)
    assert np.array_equal(out, again)
    # One window alone gives the same vector as in a batch; only the last window_samples count.
    assert np.array_equal(extractor.embed([windows[1]])[0], out[1])
    longer = speech[16000 - 500 : 16000 + ws]
    assert np.array_equal(extractor.embed([longer])[0], extractor.embed([speech[16000 : 16000 + ws]])[0])
    assert extractor.embed([]).shape == (0, af.FEATURE_DIM)
    # Voiced speech has a pitch; silence has none.
    pitch = af.feature_names().index("pitch[6]")  # voiced fraction
    assert out[1, pitch] > 0.3 and out[3, pitch] == 0.0


def test_extractor_refuses_short_or_bad_windows(extractor: af.LogMelStatsExtractor, speech: np.ndarray) -> None:
    with pytest.raises(ValueError, match="samples"):
        extractor.embed([speech[: extractor.window_samples - 1]])
    bad = speech[: extractor.window_samples].copy()
    bad[10] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        extractor.embed([bad])


def test_extractor_mel_and_percentiles_match_the_dense_versions(extractor: af.LogMelStatsExtractor) -> None:
    import librosa

    rng = np.random.default_rng(0)
    power = rng.random((7, af.N_FFT // 2 + 1)).astype(np.float32)
    dense = power @ librosa.filters.mel(sr=SAMPLE_RATE, n_fft=af.N_FFT, n_mels=af.N_MELS, fmin=50.0, fmax=8000.0).T
    sparse = np.add.reduceat(power[:, extractor._mel_bins] * extractor._mel_weights, extractor._mel_starts, axis=1)
    np.testing.assert_allclose(sparse, dense, rtol=1e-5)
    x = rng.normal(size=37)
    np.testing.assert_allclose(af._percentiles(x, (10.0, 90.0)), np.percentile(x, [10, 90]))


# -- speaker normaliser ---------------------------------------------------------------------------


def test_speaker_normaliser_matches_pooled_statistics() -> None:
    rng = np.random.default_rng(1)
    dim, n0 = 5, 7.0
    m0, s0 = rng.normal(size=dim), rng.uniform(0.5, 2.0, size=dim)
    xs = rng.normal(3.0, 2.0, size=(40, dim))
    norm = SpeakerNormaliser(m0, s0, n0)
    np.testing.assert_allclose(norm.normalise(xs[:3]), ((xs[:3] - m0) / s0).astype(np.float32), rtol=1e-5)
    for x in xs:
        norm.update(x)
    n = n0 + len(xs)
    mean = (n0 * m0 + xs.sum(axis=0)) / n
    var = (n0 * (s0**2 + m0**2) + (xs**2).sum(axis=0)) / n - mean**2
    np.testing.assert_allclose(norm.mean, mean, rtol=1e-10)
    np.testing.assert_allclose(norm.std, np.sqrt(var), rtol=1e-9)
    np.testing.assert_allclose(norm.normalise(xs[:4]), (xs[:4] - mean) / np.sqrt(var), rtol=1e-4, atol=1e-5)
    assert norm.normalise(xs[None, :4]).shape == (1, 4, dim)
    # Bounded state: arrays of the feature dim, whatever the number of updates.
    assert {k: np.shape(v) for k, v in vars(norm).items() if isinstance(v, np.ndarray)} == {
        k: (dim,) for k, v in vars(norm).items() if isinstance(v, np.ndarray)
    }
    norm.reset()
    np.testing.assert_allclose(norm.mean, m0)
    np.testing.assert_allclose(norm.std, s0)
    # Without a prior the statistics are the speaker's own (numpy's population std).
    own = SpeakerNormaliser(m0, s0, 0.0)
    for x in xs:
        own.update(x)
    np.testing.assert_allclose(own.mean, xs.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(own.std, xs.std(axis=0), rtol=1e-9)
    with pytest.raises(ValueError):
        own.update(np.ones(dim + 1))
    with pytest.raises(ValueError):
        SpeakerNormaliser(m0, np.zeros(dim), 1.0)


# -- head -----------------------------------------------------------------------------------------


def test_pooling_and_head_round_trip() -> None:
    rng = np.random.default_rng(2)
    dim = 4
    xa = rng.normal(size=(3, SEQ_LEN, dim)).astype(np.float32)
    am = np.zeros((3, SEQ_LEN), np.float32)
    am[0] = 1.0
    am[1, -3:] = 1.0  # row 2: no valid step
    pooled = pool_sequence(xa, am)
    assert pooled.shape == (3, pooled_dim(dim))
    np.testing.assert_allclose(pooled[1, :dim], xa[1, -3:].mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(pooled[1, dim : 2 * dim], xa[1, -3:].std(axis=0), rtol=1e-4)
    assert pooled[1, -1] == pytest.approx(0.3) and not pooled[2].any()

    p = pooled_dim(dim)
    head = AudioHead(
        rng.normal(size=p), rng.uniform(0.5, 2, size=p), rng.normal(size=(p, NUM_CLASSES)), rng.normal(size=6)
    )
    back = AudioHead.from_arrays({k: v.copy() for k, v in head.to_arrays().items()})
    assert back.input_dim == dim and head.meta()["input_dim"] == dim
    logits = head.logits(pooled)
    assert logits.shape == (3, NUM_CLASSES) and logits.dtype == np.float32
    assert np.array_equal(logits, back.logits(pooled))
    z = (pooled[:2].astype(np.float64) - head.mean) / head.scale
    np.testing.assert_allclose(logits[:2], z @ head.weight + head.bias, rtol=1e-4, atol=1e-4)
    assert not logits[2].any()  # no audio: zeros, the caller ignores them
    with pytest.raises(ValueError):
        AudioHead.from_arrays({"mean": head.mean})
    with pytest.raises(ValueError):
        head.logits(pooled[:, :-1])


# -- RAVDESS scan ---------------------------------------------------------------------------------


def test_scan_reports_bad_files_and_keeps_the_good_ones(
    tmp_path: Path, ravdess_dir: Path, extractor: af.LogMelStatsExtractor, detector: SpeechDetector
) -> None:
    actor = tmp_path / "Actor_01"
    actor.mkdir()
    good = ["03-01-05-02-01-01-01.flac", "03-01-04-01-02-01-01.flac", "03-01-01-01-01-01-01.flac"]
    for name in good:
        shutil.copy(ravdess_dir / "Actor_01" / name, actor / name)
    shutil.copy(ravdess_dir / "Actor_01" / "03-01-08-01-01-01-01.flac", actor / "03-01-08-01-01-01-01.flac")
    (actor / "03-01-03-01-01-01-01.flac").write_bytes(b"fLaC but not really" * 50)  # corrupt, valid name
    (actor / "notes.flac").write_bytes(b"\x00" * 100)  # bad name
    # A 48 kHz stereo WAV is down-mixed and resampled, not skipped.
    x16 = read_audio(actor / good[0])
    x48 = np.repeat(np.interp(np.arange(3 * len(x16)) / 3.0, np.arange(len(x16)), x16)[:, None], 2, axis=1)
    sf.write(actor / "03-01-06-01-01-01-01.wav", x48.astype(np.float32), 48000)

    scan = scan_ravdess(tmp_path)
    reasons = dict(scan.skipped)
    assert "does not match" in reasons[str(Path("Actor_01/notes.flac"))]
    assert "surprised" in reasons[str(Path("Actor_01/03-01-08-01-01-01-01.flac"))]
    assert len(scan.files) == 5
    feats, bad = extract_files(tmp_path, scan.files, extractor, detector, 4800)
    assert [name for name, _ in bad] == [str(Path("Actor_01/03-01-03-01-01-01-01.flac"))]
    assert "unreadable" in bad[0][1]
    assert sorted(f.name for f in feats) == sorted(
        [str(Path("Actor_01") / n) for n in good] + [str(Path("Actor_01/03-01-06-01-01-01-01.wav"))]
    )
    wav = next(f for f in feats if f.name.endswith(".wav"))
    assert wav.windows == len(window_ends(len(x16), extractor.window_samples, 4800)) and wav.file.label == 1
    assert all(f.feats.shape[1] == af.FEATURE_DIM and len(f.feats) > 0 for f in feats)


# -- training end to end --------------------------------------------------------------------------


def test_train_audio_on_four_actors_beats_chance(tmp_path: Path, ravdess_dir: Path, detector: SpeechDetector) -> None:
    for a in (1, 2, 3, 4):
        (tmp_path / f"Actor_{a:02d}").symlink_to(ravdess_dir / f"Actor_{a:02d}", target_is_directory=True)
    (tmp_path / "Actor_02_extra").mkdir()
    (tmp_path / "Actor_02_extra" / "03-01-03-01-01-01-02.flac").write_bytes(b"garbage")
    result = train_audio(
        tmp_path,
        seed=0,
        test_actors=(4,),
        val_actors=(3,),
        c_grid=(0.01,),
        prior_count_grid=(10.0,),
        orders=1,
        detector=detector,
    )
    reasons = dict(result.skipped)
    assert "unreadable" in reasons[str(Path("Actor_02_extra/03-01-03-01-01-01-02.flac"))]
    assert len([s for s in result.skipped if "surprised" in s[1]]) == 4 * 8
    assert result.files_used == 4 * 52 and result.train_actors == (1, 2)
    assert result.test_confusion.sum() == len(result.test_labels) == 52
    assert result.val_logits.shape == (52, NUM_CLASSES) and result.val_labels.shape == (52,)
    assert result.test_balanced_accuracy > 1.0 / NUM_CLASSES + 0.1, result.test_confusion
    assert result.head.input_dim == af.FEATURE_DIM and result.prior_mean.shape == (af.FEATURE_DIM,)

    # Deterministic: the same features and seed give bit-identical arrays.
    scan = scan_ravdess(tmp_path)
    feats, _ = extract_files(tmp_path, scan.files, af.LogMelStatsExtractor(), detector, 4800)
    kwargs = {
        "seed": 0,
        "test_actors": (4,),
        "val_actors": (3,),
        "c_grid": (0.01,),
        "prior_count_grid": (10.0,),
        "orders": 1,
    }
    again = train_on_features(tmp_path, feats, **kwargs)  # type: ignore[arg-type]
    for key, value in result.head.to_arrays().items():
        assert np.array_equal(value, again.head.to_arrays()[key]), key
    assert np.array_equal(result.prior_mean, again.prior_mean) and np.array_equal(result.test_logits, again.test_logits)
