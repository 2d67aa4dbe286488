"""Audio embedding: Wav2Vec2 mean-pooled last hidden state over a 0.6 s, 16 kHz window (docs/features.md, "Audio:
1024 floats per 0.6 s window").

Model: ``audeering/wav2vec2-large-robust-12-ft-emotion-msp-dim`` loaded as feature extractor + base
``Wav2Vec2Model`` (no regression head); embedding = mean over time of ``last_hidden_state`` (1024-d).

**Window length: always 0.6 s.** The original trained on 0.6 s (9600-sample) windows centred on each
frame time, but its live server embedded whatever the latest browser chunk held, and the browser
sends 100 ms (1600-sample) chunks (docs/features.md, "The 0.6 s window fix"). Mean-pooling 5 encoder frames instead
of 30
gives embeddings the trained models never saw, so serving was skewed against training. We always
embed 0.6 s: :func:`centred_window` offline (identical to training) and :func:`trailing_window` live
(the newest 0.6 s of the ring buffer, i.e. a window centred on *now − 0.3 s*). Both skip windows
shorter than 2400 samples or silent ones (std < 1e-6), the training rule; the original's live
minimum of 1200 samples is not used.

Precision options (see ``docs/features.md`` for measured speed and cosine deviation):
``fp32`` (reference), ``bf16`` (weights and inputs in bfloat16) and ``int8`` (dynamic quantisation
of every ``nn.Linear``, CPU only).
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, get_args

import numpy as np

from models.assets import AssetNotFoundError, hf_cache_dir
from models.constants import (
    AUDIO_MIN_SAMPLES,
    AUDIO_WINDOW_SAMPLES,
    DEFAULT_WAV2VEC2_ID,
    SAMPLE_RATE,
)

if TYPE_CHECKING:
    import torch
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

Precision = Literal["fp32", "bf16", "int8"]
PRECISIONS: Final[tuple[str, ...]] = get_args(Precision)
SILENCE_STD: Final[float] = 1e-6
OFFLINE_CLIP_SEC: Final[float] = 4.0
DEFAULT_BATCH_SIZE: Final[int] = 32


# --------------------------------------------------------------------------------------------------
# Windows


def _mono_f32(signal: np.ndarray) -> np.ndarray:
    sig = np.asarray(signal, dtype=np.float32)
    if sig.ndim != 1:
        raise ValueError(f"expected a mono 1-D signal, got shape {sig.shape}")
    return sig


def window_skip_reason(window: np.ndarray, min_samples: int = AUDIO_MIN_SAMPLES) -> str | None:
    """The audio-window rule, shared by training, the live engine and replay (``bot.pipeline.sampling``).

    ``"short"`` when the window holds fewer than ``min_samples`` samples (2400 by default: the
    original's offline rule, which serving follows so that it matches training), ``"silent"`` when it
    is digital silence (std < 1e-6), ``None`` when it may be embedded.
    """
    if window.shape[0] < min_samples:
        return "short"
    if float(np.std(window)) < SILENCE_STD:
        return "silent"
    return None


def _usable(window: np.ndarray) -> np.ndarray | None:
    """The training rule (:func:`window_skip_reason`): too short or silent windows are skipped."""
    return None if window_skip_reason(window) is not None else window


def centred_window(signal: np.ndarray, centre_sample: int, length: int = AUDIO_WINDOW_SAMPLES) -> np.ndarray | None:
    """``length`` samples centred on ``centre_sample``, shifted to stay inside the signal.

    A signal shorter than ``length`` yields the whole signal. Returns ``None`` when the window is
    shorter than 2400 samples or silent, as the original's offline extraction did.
    """
    sig = _mono_f32(signal)
    start = int(centre_sample) - length // 2
    start = min(max(start, 0), max(sig.shape[0] - length, 0))
    return _usable(sig[start : start + length])


def trailing_window(signal: np.ndarray, length: int = AUDIO_WINDOW_SAMPLES) -> np.ndarray | None:
    """The newest ``length`` samples (live use); ``None`` when too short or silent."""
    sig = _mono_f32(signal)
    return _usable(sig[max(sig.shape[0] - length, 0) :])


def pad_or_truncate(signal: np.ndarray, length: int = int(OFFLINE_CLIP_SEC * SAMPLE_RATE)) -> np.ndarray:
    """Zero-pad at the end or cut to exactly ``length`` samples (offline clips are fixed at 4 s)."""
    sig = _mono_f32(signal)
    if sig.shape[0] >= length:
        return sig[:length]
    return np.pad(sig, (0, length - sig.shape[0]))


def windows_for_times(
    signal: np.ndarray,
    times_sec: Sequence[float] | np.ndarray,
    length: int = AUDIO_WINDOW_SAMPLES,
    sample_rate: int = SAMPLE_RATE,
) -> list[np.ndarray | None]:
    """One :func:`centred_window` per frame time (offline clips; ``None`` marks a skipped slot)."""
    return [centred_window(signal, round(float(t) * sample_rate), length) for t in times_sec]


# --------------------------------------------------------------------------------------------------
# Model loading


def _env_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def load_wav2vec2(
    source: str | Path = DEFAULT_WAV2VEC2_ID,
    cache_dir: Path | None = None,
    offline: bool | None = None,
) -> tuple[Wav2Vec2FeatureExtractor, Wav2Vec2Model]:
    """Load the feature extractor and base Wav2Vec2 model (eval mode, float32) from a hub id or folder.

    ``offline`` defaults to True when ``source`` is a local folder or ``HF_HUB_OFFLINE=1``; then
    nothing is downloaded. A missing model raises :class:`AssetNotFoundError` naming the id, the
    cache folder and the fix, instead of Transformers' generic OSError.
    """
    import torch
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    local = Path(source).expanduser().is_dir()
    if offline is None:
        offline = local or _env_offline()
    cache = hf_cache_dir() if cache_dir is None else Path(cache_dir)
    name = str(Path(source).expanduser()) if local else str(source)

    def load(local_only: bool) -> tuple[Wav2Vec2FeatureExtractor, Wav2Vec2Model]:
        extractor = Wav2Vec2FeatureExtractor.from_pretrained(name, cache_dir=str(cache), local_files_only=local_only)
        model = Wav2Vec2Model.from_pretrained(
            name, cache_dir=str(cache), local_files_only=local_only, dtype=torch.float32
        )
        return extractor, model

    try:
        try:
            # The cache first: a cached model never touches the network.
            extractor, model = load(True)
        except OSError:
            if offline:
                raise
            # Not cached: without a reachable hub, huggingface_hub would retry for about a minute
            # before failing; one quick connection attempt says the same at once.
            _check_hub_reachable()
            extractor, model = load(False)
    except OSError as exc:
        raise AssetNotFoundError(_missing_model_message(str(source), cache, offline, exc)) from exc
    model.eval()
    return extractor, model


def _check_hub_reachable(timeout_s: float = 3.0) -> None:
    """Raise ``OSError`` at once when the model hub (``$HF_ENDPOINT``) cannot be connected to."""
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout_s).close()
    except OSError as exc:
        raise OSError(f"the model hub {url.geturl()} is unreachable ({exc})") from exc


def _missing_model_message(source: str, cache: Path, offline: bool, exc: Exception) -> str:
    mode = "offline (HF_HUB_OFFLINE=1 or a local folder)" if offline else "online"
    return (
        f"Wav2Vec2 model {source!r} could not be loaded ({mode}) with Hugging Face cache {cache}: {exc}\n"
        f"To fix: run `hoovik-bot models fetch` on a machine with network access (it fills {cache}), "
        f"or set the audio model to a local folder holding config.json, preprocessor_config.json "
        f"and the weights.\n"
        f"Offline? Run without --bundle (the shipped starter bundle needs no download), pass "
        f"--audio-model DIR, or --allow-untrained (results are flagged untrained). "
        f"HF_HUB_OFFLINE=1 makes a missing model fail at once."
    )


# --------------------------------------------------------------------------------------------------
# Embedder


def _apply_precision(model: Wav2Vec2Model, precision: str, device: str) -> Wav2Vec2Model:
    """Return a copy of ``model`` in the requested precision (the caller's model is never mutated)."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "int8" and torch.device(device).type != "cpu":
        raise ValueError("int8 dynamic quantisation runs on CPU only")
    out = copy.deepcopy(model).eval()
    _bake_weight_norm(out)
    if precision == "int8":
        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():  # torch 2.13 points users to torchao; the API still works
            warnings.simplefilter("ignore")
            quantize_dynamic(out, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
        return out
    out.to(torch.device(device))
    if precision == "bf16":
        out.bfloat16()
    else:
        out.float()
    return out


def _bake_weight_norm(model: Wav2Vec2Model) -> None:
    """Replace the weight-normed positional conv with a plain conv holding the same weight.

    Wav2Vec2's positional conv (1024×64×128 for the large model) is a weight-norm parametrisation
    that is recomputed on every forward call (~20 ms on 2 cores, ~10 % of a batch-1 call). Frozen
    inference never changes it, so it is computed once here; outputs are bit-identical.
    """
    import torch
    from torch.nn.utils import parametrize

    pos = getattr(getattr(model, "encoder", None), "pos_conv_embed", None)
    conv = getattr(pos, "conv", None)
    if pos is None or not isinstance(conv, torch.nn.Conv1d) or not parametrize.is_parametrized(conv, "weight"):
        return
    padding = conv.padding if isinstance(conv.padding, str) else conv.padding[0]
    plain = torch.nn.Conv1d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size[0],
        stride=conv.stride[0],
        padding=padding,
        dilation=conv.dilation[0],
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    with torch.no_grad():
        plain.weight.copy_(conv.weight)
        if conv.bias is not None and plain.bias is not None:
            plain.bias.copy_(conv.bias)
    pos.conv = plain.to(device=conv.weight.device, dtype=conv.weight.dtype)


class AudioEmbedder:
    """Wav2Vec2 window embedder: list of 16 kHz float32 windows in, (N, hidden_size) float32 out.

    ``embed`` only reads the model, so one instance may serve several audio-executor threads; torch
    parallelises each call internally, so size ``torch.set_num_threads`` with the pool in mind.
    """

    extractor: Wav2Vec2FeatureExtractor
    model: Wav2Vec2Model
    precision: str
    device: str

    def __init__(
        self,
        source: str | Path = DEFAULT_WAV2VEC2_ID,
        precision: Precision = "fp32",
        cache_dir: Path | None = None,
        device: str = "cpu",
        offline: bool | None = None,
    ) -> None:
        extractor, model = load_wav2vec2(source, cache_dir=cache_dir, offline=offline)
        self._setup(extractor, model, precision, device)

    @classmethod
    def from_model(
        cls,
        extractor: Wav2Vec2FeatureExtractor,
        model: Wav2Vec2Model,
        precision: Precision = "fp32",
        device: str = "cpu",
    ) -> AudioEmbedder:
        """Wrap an already-loaded pair (tests, benches, several precisions of one model)."""
        embedder = cls.__new__(cls)
        embedder._setup(extractor, model, precision, device)
        return embedder

    def _setup(self, extractor: Wav2Vec2FeatureExtractor, model: Wav2Vec2Model, precision: str, device: str) -> None:
        import torch

        self.extractor = extractor
        self.precision = precision
        self.device = device
        self.model = _apply_precision(model, precision, device)
        self._input_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        # Extractors whose config says "no attention mask" (group-norm models) change a window's
        # embedding when it is zero-padded, so such windows are only batched with equal lengths.
        self._masked = bool(getattr(extractor, "return_attention_mask", False))
        self._min_samples = _min_input_samples(self.model)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def embed(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """Embed windows in one batched forward (per equal-length group without attention mask)."""
        arrays = [self._check_window(w) for w in windows]
        out = np.zeros((len(arrays), self.hidden_size), dtype=np.float32)
        for idx in self._groups(arrays):
            out[idx] = self._forward([arrays[i] for i in idx])
        return out

    def embed_slots(
        self, windows: Sequence[np.ndarray | None], batch_size: int = DEFAULT_BATCH_SIZE
    ) -> tuple[np.ndarray, np.ndarray]:
        """Embed the non-``None`` slots in batches; skipped slots get a zero row and mask 0."""
        out = np.zeros((len(windows), self.hidden_size), dtype=np.float32)
        mask = np.zeros(len(windows), dtype=np.float32)
        valid = [i for i, w in enumerate(windows) if w is not None]
        for lo in range(0, len(valid), batch_size):
            idx = valid[lo : lo + batch_size]
            out[idx] = self.embed([w for w in (windows[i] for i in idx) if w is not None])
            mask[idx] = 1.0
        return out, mask

    def _check_window(self, window: np.ndarray) -> np.ndarray:
        arr = _mono_f32(window)
        if arr.shape[0] < self._min_samples:
            raise ValueError(
                f"window of {arr.shape[0]} samples is shorter than the model's receptive field "
                f"({self._min_samples}); use centred_window/trailing_window, which skip short windows"
            )
        return arr

    def _groups(self, arrays: list[np.ndarray]) -> list[list[int]]:
        if not arrays:
            return []
        if self._masked:
            return [list(range(len(arrays)))]
        by_length: dict[int, list[int]] = {}
        for i, a in enumerate(arrays):
            by_length.setdefault(a.shape[0], []).append(i)
        return list(by_length.values())

    def _forward(self, batch: list[np.ndarray]) -> np.ndarray:
        import torch

        padded = len({a.shape[0] for a in batch}) > 1
        feats = self.extractor(
            batch,
            sampling_rate=SAMPLE_RATE,
            padding=True,
            return_tensors="pt",
            return_attention_mask=self._masked,
        )
        values = feats["input_values"].to(device=self.device, dtype=self._input_dtype)
        # Without padding the mask is all ones: skipping it gives the same result on the fast path.
        mask = feats["attention_mask"].to(self.device) if padded and self._masked else None
        with torch.inference_mode():
            hidden = self.model(values, attention_mask=mask).last_hidden_state.float()
            pooled = _masked_mean(self.model, hidden, mask)
        return pooled.cpu().numpy().astype(np.float32)


def _masked_mean(model: Wav2Vec2Model, hidden: torch.Tensor, sample_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over encoder frames, counting only frames that come from real (unpadded) samples."""
    if sample_mask is None:
        return hidden.mean(dim=1)
    frame_mask = model._get_feature_vector_attention_mask(hidden.shape[1], sample_mask.long())  # type: ignore[arg-type]
    weights = frame_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def _min_input_samples(model: Wav2Vec2Model) -> int:
    """Fewest samples that give one encoder frame (400 for the standard conv stack)."""
    n = 1
    layers = zip(model.config.conv_kernel, model.config.conv_stride, strict=True)
    for kernel, stride in reversed(list(layers)):
        n = (n - 1) * stride + kernel
    return n
