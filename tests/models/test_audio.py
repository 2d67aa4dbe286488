"""Audio windows and the Wav2Vec2 embedder, on a tiny randomly initialised model saved to disk.

The production model cannot be downloaded here, so the embedder is exercised end to end (save →
``load_wav2vec2`` → ``AudioEmbedder``) on a 2-layer, 32-wide Wav2Vec2 with the production model's
layout (layer-norm conv stack, stable layer norm, attention mask). Nothing here touches the network.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

from models.assets import AssetNotFoundError
from models.audio import (
    AudioEmbedder,
    centred_window,
    load_wav2vec2,
    pad_or_truncate,
    trailing_window,
    windows_for_times,
)
from models.constants import AUDIO_WINDOW_SAMPLES, SAMPLE_RATE

HIDDEN = 32


def _tiny_model(tmp_path_factory: pytest.TempPathFactory, name: str, norm: str, mask: bool) -> Path:
    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        feat_extract_norm=norm,
        do_stable_layer_norm=(norm == "layer"),
        conv_bias=True,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        vocab_size=None,
    )
    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=SAMPLE_RATE,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=mask,
    )
    folder = tmp_path_factory.mktemp(name)
    Wav2Vec2Model(config).save_pretrained(folder)
    extractor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Production-like: layer-norm conv stack, attention mask returned by the extractor."""
    return _tiny_model(tmp_path_factory, "tiny_w2v2", "layer", True)


@pytest.fixture(scope="session")
def tiny_nomask_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """wav2vec2-base-like: group-norm conv stack, no attention mask."""
    return _tiny_model(tmp_path_factory, "tiny_w2v2_nomask", "group", False)


@pytest.fixture(scope="session")
def embedder(tiny_dir: Path) -> AudioEmbedder:
    return AudioEmbedder(tiny_dir)


@pytest.fixture(scope="session")
def speech(media_dir: Path) -> np.ndarray:
    """A RAVDESS utterance decoded and resampled to 16 kHz mono float32 with PyAV."""
    wavs = sorted((media_dir / "ravdess" / "audio").glob("*.wav"))
    assert wavs, "no RAVDESS wav files in the shared media folder"
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    with av.open(str(wavs[0])) as container:
        for frame in container.decode(audio=0):
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
    chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    signal = np.concatenate(chunks).astype(np.float32)
    assert signal.shape[0] > SAMPLE_RATE  # RAVDESS utterances last ~3-4 s
    return signal


def _noise(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32) * 0.1


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# ---------------------------------------------------------------------------------------------- windows


def test_centred_window_is_shifted_inside_the_signal() -> None:
    sig = np.arange(32000, dtype=np.float32)
    assert centred_window(sig, 16000) is not None
    np.testing.assert_array_equal(centred_window(sig, 16000), sig[11200:20800])  # type: ignore[arg-type]
    np.testing.assert_array_equal(centred_window(sig, 0), sig[:9600])  # type: ignore[arg-type]
    np.testing.assert_array_equal(centred_window(sig, 31999), sig[-9600:])  # type: ignore[arg-type]
    np.testing.assert_array_equal(centred_window(sig, 10**9), sig[-9600:])  # type: ignore[arg-type]


def test_short_and_silent_windows_are_skipped() -> None:
    assert centred_window(_noise(2399, 0), 1000) is None  # < 2400 samples
    whole = centred_window(_noise(5000, 0), 2500)
    assert whole is not None and whole.shape == (5000,)  # shorter than 0.6 s: the whole clip
    assert centred_window(np.zeros(32000, np.float32), 16000) is None  # silence
    assert centred_window(np.full(32000, 0.3, np.float32), 16000) is None  # DC is silence too
    assert trailing_window(np.zeros(0, np.float32)) is None
    with pytest.raises(ValueError, match="mono"):
        centred_window(np.zeros((2, 9600), np.float32), 0)


def test_trailing_window_is_the_newest_six_tenths() -> None:
    sig = _noise(20000, 1)
    np.testing.assert_array_equal(trailing_window(sig), sig[-AUDIO_WINDOW_SAMPLES:])  # type: ignore[arg-type]
    short = sig[:3000]
    np.testing.assert_array_equal(trailing_window(short), short)  # type: ignore[arg-type]
    assert trailing_window(sig[:1600]) is None  # the original's 100 ms live snippet is refused


def test_windows_for_times_and_padding() -> None:
    clip = pad_or_truncate(_noise(40000, 2))
    assert clip.shape == (64000,) and np.all(clip[40000:] == 0)
    assert pad_or_truncate(_noise(70000, 2)).shape == (64000,)
    times = np.linspace(0, 4.0 * (1 - 1 / 10), 10)
    windows = windows_for_times(clip, times)
    assert len(windows) == 10
    assert all(w is not None and w.shape == (9600,) for w in windows[:5])
    assert windows[-1] is None  # t = 3.6 s lies in the zero padding: silent, skipped


# ---------------------------------------------------------------------------------------------- loading


def test_load_local_folder_is_offline_and_eval(tiny_dir: Path) -> None:
    extractor, model = load_wav2vec2(tiny_dir)
    assert isinstance(extractor, Wav2Vec2FeatureExtractor) and isinstance(model, Wav2Vec2Model)
    assert not model.training
    assert next(model.parameters()).dtype == torch.float32


def test_missing_hub_model_offline_gives_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "empty-hf-cache"
    with pytest.raises(AssetNotFoundError) as info:
        load_wav2vec2("audeering/wav2vec2-large-robust-12-ft-emotion-msp-dim", cache_dir=cache)
    message = str(info.value)
    assert "audeering/wav2vec2-large-robust-12-ft-emotion-msp-dim" in message
    assert str(cache) in message and "hoovik-bot models fetch" in message


def test_unreachable_hub_fails_at_once_with_the_offline_choices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Online mode with no network: one refused connection, not a minute of hub retries."""
    import socket

    with socket.socket() as s:  # a port nothing listens on: connecting is refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(AssetNotFoundError) as info:
        load_wav2vec2("no-such-org/no-such-model", cache_dir=tmp_path, offline=False)
    message = str(info.value)
    assert "unreachable" in message and "(online)" in message
    assert "shipped starter bundle" in message and "--allow-untrained" in message


def test_missing_local_folder_offline_gives_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AssetNotFoundError, match="hoovik-bot models fetch"):
        load_wav2vec2("no-such-org/no-such-model", cache_dir=tmp_path, offline=True)


# ---------------------------------------------------------------------------------------------- embedder


def test_shapes_and_dtype(embedder: AudioEmbedder) -> None:
    out = embedder.embed([_noise(9600, i) for i in range(3)])
    assert embedder.hidden_size == HIDDEN
    assert out.shape == (3, HIDDEN) and out.dtype == np.float32 and np.all(np.isfinite(out))
    assert embedder.embed([]).shape == (0, HIDDEN)


def test_batch_equals_single_calls(embedder: AudioEmbedder) -> None:
    windows = [_noise(9600, i) for i in range(4)]
    batched = embedder.embed(windows)
    singles = np.concatenate([embedder.embed([w]) for w in windows])
    np.testing.assert_allclose(batched, singles, atol=1e-5)


def test_padded_windows_embed_as_if_alone(embedder: AudioEmbedder) -> None:
    windows = [_noise(9600, 10), _noise(5000, 11), _noise(2400, 12)]
    batched = embedder.embed(windows)
    singles = np.concatenate([embedder.embed([w]) for w in windows])
    np.testing.assert_allclose(batched, singles, atol=1e-5)


def test_extractor_without_mask_batches_by_length(tiny_nomask_dir: Path) -> None:
    emb = AudioEmbedder(tiny_nomask_dir)
    windows = [_noise(9600, 20), _noise(4000, 21), _noise(9600, 22)]
    batched = emb.embed(windows)
    singles = np.concatenate([emb.embed([w]) for w in windows])
    np.testing.assert_allclose(batched, singles, atol=1e-5)


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precision_stays_close(tiny_dir: Path, embedder: AudioEmbedder, precision: str) -> None:
    extractor, model = load_wav2vec2(tiny_dir)
    reduced = AudioEmbedder.from_model(extractor, model, precision=precision)  # type: ignore[arg-type]
    windows = [_noise(9600, 30 + i) for i in range(3)]
    cos = _cos(reduced.embed(windows), embedder.embed(windows))
    assert np.all(cos > 0.9), cos
    assert next(model.parameters()).dtype == torch.float32  # the caller's model is left untouched


def test_rejects_bad_windows_and_precision(embedder: AudioEmbedder, tiny_dir: Path) -> None:
    with pytest.raises(ValueError, match="receptive field"):
        embedder.embed([_noise(100, 0)])
    with pytest.raises(ValueError, match="mono"):
        embedder.embed([np.zeros((2, 9600), np.float32)])
    extractor, model = load_wav2vec2(tiny_dir)
    with pytest.raises(ValueError, match="precision"):
        AudioEmbedder.from_model(extractor, model, precision="fp16")  # type: ignore[arg-type]


def test_embed_slots_zero_and_mask_skipped(embedder: AudioEmbedder) -> None:
    windows = [_noise(9600, 40), None, _noise(9600, 41), None]
    out, mask = embedder.embed_slots(windows, batch_size=1)
    np.testing.assert_array_equal(mask, [1, 0, 1, 0])
    np.testing.assert_array_equal(out[[1, 3]], 0.0)
    np.testing.assert_allclose(out[[0, 2]], embedder.embed([windows[0], windows[2]]), atol=1e-5)  # type: ignore[list-item]


def test_real_speech_goes_through(embedder: AudioEmbedder, speech: np.ndarray) -> None:
    live = trailing_window(speech)
    assert live is not None and live.shape == (AUDIO_WINDOW_SAMPLES,)
    duration = speech.shape[0] / SAMPLE_RATE
    offline = windows_for_times(pad_or_truncate(speech), np.linspace(0, duration * 0.9, 10))
    usable = [w for w in offline if w is not None]
    assert len(usable) >= 5
    out = embedder.embed([live, *usable])
    assert out.shape == (1 + len(usable), HIDDEN) and np.all(np.isfinite(out))


def test_embedding_is_mean_of_last_hidden_state(tiny_dir: Path, embedder: AudioEmbedder) -> None:
    """Reference computation on the untouched model (weight-normed positional conv, no mask)."""
    extractor, model = load_wav2vec2(tiny_dir)
    window = _noise(9600, 50)
    inputs = extractor([window], sampling_rate=SAMPLE_RATE, return_tensors="pt")
    with torch.inference_mode():
        expected = model(inputs["input_values"]).last_hidden_state.mean(dim=1).numpy()
    np.testing.assert_allclose(embedder.embed([window]), expected, atol=1e-6)
    from torch.nn.utils import parametrize

    assert parametrize.is_parametrized(model.encoder.pos_conv_embed.conv)
    assert not parametrize.is_parametrized(embedder.model.encoder.pos_conv_embed.conv)  # baked once
