"""The reference system's two-stream EmotionTransformer (docs/models.md, "The predictor"), weight-compatible with
its checkpoints.

Submodule and parameter names are chosen so that a ``best_modal.pt`` saved by the reference training
script (``torch.save(model.state_dict())``: a flat ``OrderedDict`` of 148 float32 tensors) loads with
``load_state_dict(strict=True)``. Any renaming here breaks checkpoint import, so the names mirror the
original exactly, including the ``Sequential`` indices of layers that hold no parameters (GELU,
Dropout), which is why ``net.3``/``fusion_head.5`` skip numbers.

Module boundary: :class:`TransformerRunner` takes and returns numpy arrays; everything torch stays in
this file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from models.constants import AUDIO_DIM, FACE_DIM, NUM_CLASSES

__all__ = [
    "CONFIG_LIMITS",
    "EmotionTransformer",
    "MaskedAttentionPooling",
    "ModalityProjection",
    "PositionalEncoding",
    "TemporalConvStem",
    "TransformerConfig",
    "TransformerOutputs",
    "TransformerRunner",
    "build_seeded_model",
    "count_parameters",
    "load_hoovik_checkpoint",
]

TransformerOutputs = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]

# Bounds for :meth:`TransformerConfig.check_limits` (inclusive). The largest admitted model has about
# 110 M parameters (~440 MB in float32); the reference has 4.2 M.
CONFIG_LIMITS: dict[str, tuple[float, float]] = {
    "face_dim": (1, 1 << 14),
    "audio_dim": (1, 1 << 14),
    "d_model": (8, 1024),
    "nhead": (2, 64),
    "num_layers": (1, 8),
    "dim_feedforward": (2, 8192),
    "dropout": (0.0, 0.99),
    "face_scale": (0.0, 100.0),
    "cross_gate_weight": (-100.0, 100.0),
    "conf_blend_weight": (-100.0, 100.0),
    "modality_drop_prob": (0.0, 0.99),
    "num_classes": (2, 64),
    "max_len": (1, 4096),
}


@dataclass(frozen=True)
class TransformerConfig:
    """Architecture hyper-parameters; the defaults are the reference production values (docs/models.md, "The
    predictor").

    ``d_model``, ``nhead`` and ``dim_feedforward`` are totals across the two streams: each stream
    gets half of each (128 wide, 4 heads, 384 feed-forward), as in the original.
    """

    face_dim: int = FACE_DIM
    audio_dim: int = AUDIO_DIM
    d_model: int = 256
    nhead: int = 8
    num_layers: int = 3
    dim_feedforward: int = 768
    dropout: float = 0.151792
    face_scale: float = 1.2
    cross_gate_weight: float = 0.7
    conf_blend_weight: float = 0.5
    modality_drop_prob: float = 0.06822
    num_classes: int = NUM_CLASSES
    max_len: int = 64

    def __post_init__(self) -> None:
        for name in (
            "face_dim",
            "audio_dim",
            "d_model",
            "nhead",
            "num_layers",
            "dim_feedforward",
            "num_classes",
            "max_len",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TransformerConfig.{name} must be a positive integer, got {value!r}")
        for name in ("dropout", "face_scale", "cross_gate_weight", "conf_blend_weight", "modality_drop_prob"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"TransformerConfig.{name} must be a finite number, got {value!r}")
        if self.d_model % 2 or self.nhead % 2 or self.dim_feedforward % 2:
            raise ValueError("d_model, nhead and dim_feedforward must be even (split across two streams)")
        half = self.d_model // 2
        if half % 4:
            raise ValueError("d_model/2 must be divisible by 4 (grouped convolutions use d_model/8 groups)")
        if half % (self.nhead // 2):
            raise ValueError("d_model/2 must be divisible by nhead/2")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.modality_drop_prob < 1.0:
            raise ValueError("dropout probabilities must lie in [0, 1)")

    def check_limits(self) -> None:
        """Refuse a configuration outside :data:`CONFIG_LIMITS` (``ValueError`` naming the field).

        For configurations read from a file (a bundle manifest): building the model allocates
        memory in proportion to these sizes, so they are bounded before anything is built. The
        limits admit the reference model (3 layers, 256 wide) and the training configs with a wide
        margin.
        """
        for name, (low, high) in CONFIG_LIMITS.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(f"TransformerConfig.{name} = {value!r} outside the supported range [{low}, {high}]")

    @property
    def half(self) -> int:
        """Width of one stream."""
        return self.d_model // 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TransformerConfig:
        """Build from a mapping, rejecting unknown keys so that a typo cannot silently fall back."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TransformerConfig keys: {unknown}")
        return cls(**dict(data))  # __post_init__ checks types and consistency


class ModalityProjection(nn.Module):
    """Gated projection of one modality's per-frame vectors to the stream width.

    value = Linear(in, 2h) → GELU → Dropout → Linear(2h, h); gate = sigmoid(Linear(in, h)).
    """

    def __init__(self, in_dim: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, out_dim * 2),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(out_dim * 2, out_dim),
        )
        self.gate = nn.Sequential(nn.Linear(in_dim, out_dim), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x) * self.gate(x)


class TemporalConvStem(nn.Module):
    """Local temporal mixing before attention: grouped k3 conv, 1×1 conv, dilated grouped k3 conv.

    Each conv is followed by LayerNorm over channels and GELU; the input is added back at the end.
    Input and output are (B, T, C); the convolutions run channels-first inside.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        groups = channels // 4
        self.conv1 = nn.Conv1d(channels, channels, kernel_size=3, padding=1, groups=groups)
        self.norm1 = nn.LayerNorm(channels)
        self.pw = nn.Conv1d(channels, channels, kernel_size=1)
        self.norm_pw = nn.LayerNorm(channels)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size=3, padding=2, dilation=2, groups=groups)
        self.norm2 = nn.LayerNorm(channels)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        y = x.transpose(1, 2)
        y = self.act(self.norm1(self.conv1(y).transpose(1, 2))).transpose(1, 2)
        y = self.act(self.norm_pw(self.pw(y).transpose(1, 2))).transpose(1, 2)
        y = self.act(self.norm2(self.conv2(y).transpose(1, 2)))
        return x + y


class PositionalEncoding(nn.Module):
    """Fixed sinusoidal encoding (even dims sin, odd dims cos), added then dropped out.

    ``pe`` is a persistent buffer because the original saved it in the state dict; keeping it
    persistent is what lets the checkpoint load strictly. Recomputed here it differs from the saved
    one by ~2e-6 (sin/cos rounding on another machine); loaded checkpoints carry their own.
    """

    pe: Tensor

    def __init__(self, d_model: int, max_len: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(1, max_len, d_model)
        pe[0, :, 0::2] = torch.sin(position * div_term)
        pe[0, :, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(x + self.pe[:, : x.size(1)])


class MaskedAttentionPooling(nn.Module):
    """Attention-weighted mean over time; positions with mask 0 get score −1e9 before the softmax."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        scores = self.score(x).squeeze(-1)
        scores = scores.masked_fill(mask == 0, -1e9)
        weights = torch.softmax(scores, dim=1)
        return torch.sum(weights.unsqueeze(-1) * x, dim=1)


class EmotionTransformer(nn.Module):
    """Face + audio sequence classifier (docs/models.md, "The predictor").

    ``forward(face (B,T,face_dim), audio (B,T,audio_dim), face_mask (B,T), audio_mask (B,T))`` returns
    ``(fusion_logits, face_logits, audio_logits, face_pool, audio_pool, z)``; serving uses only the
    fusion logits. Masks are float 0/1 (fractional during mixup training).

    Submodules are created in the original's order, not just named like it: random init then
    consumes the RNG identically, so ``torch.manual_seed(0)`` gives the golden checkpoint's weights.
    """

    def __init__(self, config: TransformerConfig | None = None) -> None:
        super().__init__()
        cfg = config or TransformerConfig()
        self.config = cfg
        h = cfg.half
        heads = cfg.nhead // 2
        ff = cfg.dim_feedforward // 2
        p = cfg.dropout

        self.face_proj = ModalityProjection(cfg.face_dim, h, p)
        self.audio_proj = ModalityProjection(cfg.audio_dim, h, p)
        self.face_conv_stem = TemporalConvStem(h)
        self.audio_conv_stem = TemporalConvStem(h)
        self.face_pos = PositionalEncoding(h, cfg.max_len, p)
        self.audio_pos = PositionalEncoding(h, cfg.max_len, p)
        self.face_token = nn.Parameter(torch.randn(1, 1, h) * 0.02)
        self.audio_token = nn.Parameter(torch.randn(1, 1, h) * 0.02)
        self.face_encoder = self._encoder(h, heads, ff, p, cfg.num_layers)
        self.audio_encoder = self._encoder(h, heads, ff, p, cfg.num_layers)
        self.face_to_cross = nn.Linear(h, h)
        self.audio_to_cross = nn.Linear(h, h)
        self.face_cross_attn = nn.MultiheadAttention(h, heads, dropout=p, batch_first=True)
        self.audio_cross_attn = nn.MultiheadAttention(h, heads, dropout=p, batch_first=True)
        self.cross_ln = nn.LayerNorm(cfg.d_model)
        self.cross_gate = nn.Sequential(nn.Linear(cfg.d_model, 1), nn.Sigmoid())
        self.face_pool = MaskedAttentionPooling(h)
        self.audio_pool = MaskedAttentionPooling(h)
        self.fusion_pool = MaskedAttentionPooling(cfg.d_model)
        self.face_head = nn.Sequential(nn.LayerNorm(h), nn.Linear(h, cfg.num_classes))
        self.audio_head = nn.Sequential(nn.LayerNorm(h), nn.Linear(h, cfg.num_classes))
        self.fusion_head = nn.Sequential(
            nn.LayerNorm(cfg.d_model),
            nn.Dropout(p),
            nn.Linear(cfg.d_model, cfg.d_model // 2),
            nn.GELU(),
            nn.Dropout(p / 2),
            nn.Linear(cfg.d_model // 2, cfg.num_classes),
        )

    @staticmethod
    def _encoder(d: int, heads: int, ff: int, p: float, layers: int) -> nn.TransformerEncoder:
        layer = nn.TransformerEncoderLayer(
            d_model=d, nhead=heads, dim_feedforward=ff, dropout=p, batch_first=True, norm_first=True
        )
        # norm_first disables the nested-tensor path anyway; saying so avoids a warning per build.
        return nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)

    def _modality_drop(self, x: Tensor) -> Tensor:
        """Training-only: zero a whole stream for a random subset of samples."""
        keep = (torch.rand(x.size(0), 1, 1, device=x.device) >= self.config.modality_drop_prob).to(x.dtype)
        return x * keep

    def forward(self, face: Tensor, audio: Tensor, face_mask: Tensor, audio_mask: Tensor) -> TransformerOutputs:
        cfg = self.config
        batch = face.size(0)
        face = face * face_mask.unsqueeze(-1)
        audio = audio * audio_mask.unsqueeze(-1)

        f = self.face_pos(cfg.face_scale * self.face_conv_stem(self.face_proj(face)))
        a = self.audio_pos(self.audio_conv_stem(self.audio_proj(audio)))

        f = torch.cat([self.face_token.expand(batch, -1, -1), f], dim=1)
        a = torch.cat([self.audio_token.expand(batch, -1, -1), a], dim=1)
        ones = torch.ones(batch, 1, dtype=face_mask.dtype, device=face_mask.device)
        fm = torch.cat([ones, face_mask], dim=1)
        am = torch.cat([ones, audio_mask], dim=1)
        f_pad = fm == 0
        a_pad = am == 0

        f_enc = self.face_encoder(f, src_key_padding_mask=f_pad)
        a_enc = self.audio_encoder(a, src_key_padding_mask=a_pad)

        f_pool = self.face_pool(f_enc, fm)
        a_pool = self.audio_pool(a_enc, am)

        if self.training and cfg.modality_drop_prob > 0:
            f_enc = self._modality_drop(f_enc)
            a_enc = self._modality_drop(a_enc)

        fq = self.face_to_cross(f_enc)
        aq = self.audio_to_cross(a_enc)
        f_x, _ = self.face_cross_attn(fq, aq, aq, key_padding_mask=a_pad)
        a_x, _ = self.audio_cross_attn(aq, fq, fq, key_padding_mask=f_pad)

        g = self.cross_gate(torch.cat([f_pool, a_pool], dim=-1)).unsqueeze(1)
        w = cfg.cross_gate_weight
        fused = self.cross_ln(torch.cat([f_enc + w * g * f_x, a_enc + w * g * a_x], dim=-1))
        z = self.fusion_pool(fused, ((fm + am) > 0).to(fused.dtype))

        face_logits = self.face_head(f_pool)
        audio_logits = self.audio_head(a_pool)

        h_f = _entropy(face_logits)
        h_a = _entropy(audio_logits)
        conf = torch.softmax(torch.stack([-h_f, -h_a], dim=-1), dim=-1)
        zeros = torch.zeros_like(f_pool)
        blend = conf[:, 0:1] * torch.cat([f_pool, zeros], dim=-1) + conf[:, 1:2] * torch.cat([zeros, a_pool], dim=-1)
        z = z + cfg.conf_blend_weight * blend

        has_any = ((face_mask.sum(dim=1) + audio_mask.sum(dim=1)) > 0).to(z.dtype).unsqueeze(-1)
        z = z * has_any

        return self.fusion_head(z), face_logits, audio_logits, f_pool, a_pool, z


def _entropy(logits: Tensor) -> Tensor:
    p = torch.softmax(logits, dim=-1)
    return -(p * torch.log(p + 1e-8)).sum(dim=-1)


def build_seeded_model(seed: int = 0, config: TransformerConfig | None = None) -> EmotionTransformer:
    """A fresh random-init model, as the reference built it right after ``torch.manual_seed(seed)``.

    Module creation order matches the original, so seed 0 reproduces the golden ``best_modal.pt``
    parameter for parameter. The global RNG state is restored afterwards, so callers (demo bundle,
    benchmarks) get deterministic weights without side effects on other seeded code.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return EmotionTransformer(config)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameter count (1,821,334 for the production config, as in the reference log)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def load_hoovik_checkpoint(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a reference ``best_modal.pt`` safely and return its flat state dict.

    ``weights_only=True`` restricts unpickling to tensors and plain containers, so a tampered file
    cannot run code. Anything other than a flat mapping of tensors (a wrapper dict with an optimiser,
    a pickled module) is refused with the file named, rather than failing later inside
    ``load_state_dict`` with an unhelpful key error.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"transformer checkpoint not found: {p}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{p}: not a loadable weights-only torch checkpoint ({exc})") from exc
    if not isinstance(obj, Mapping):
        raise ValueError(f"{p}: expected a flat mapping of tensors, got {type(obj).__name__}")
    state: dict[str, Tensor] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise ValueError(f"{p}: expected a flat mapping of str -> Tensor; entry {key!r} is {type(value).__name__}")
        state[key] = value
    if not state:
        raise ValueError(f"{p}: checkpoint holds no tensors")
    return state


class TransformerRunner:
    """An eval-mode model plus the numpy boundary the serving predictor calls.

    Inputs are the predictor's normalised arrays: ``xf (B,T,face_dim)``, ``xa (B,T,audio_dim)``,
    ``fm (B,T)``, ``am (B,T)``, float32. The runner pins torch's intra-op thread count before each call
    when ``num_threads`` is given, because the thread count changes float summation order: the golden
    vectors were made with 2 threads and 1 thread differs by ~2.4e-7 in the logits.
    """

    def __init__(
        self,
        model: EmotionTransformer,
        *,
        num_threads: int | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.num_threads = num_threads
        self.config = model.config

    @classmethod
    def from_state_dict(
        cls,
        state: Mapping[str, Tensor],
        config: TransformerConfig | None = None,
        *,
        num_threads: int | None = None,
    ) -> TransformerRunner:
        model = EmotionTransformer(config)
        model.load_state_dict(state, strict=True)
        return cls(model, num_threads=num_threads)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str],
        config: TransformerConfig | None = None,
        *,
        num_threads: int | None = None,
    ) -> TransformerRunner:
        return cls.from_state_dict(load_hoovik_checkpoint(path), config, num_threads=num_threads)

    def _prepare(self, xf: np.ndarray, xa: np.ndarray, fm: np.ndarray, am: np.ndarray) -> tuple[Tensor, ...]:
        cfg = self.config
        xf = np.asarray(xf, dtype=np.float32)
        xa = np.asarray(xa, dtype=np.float32)
        fm = np.asarray(fm, dtype=np.float32)
        am = np.asarray(am, dtype=np.float32)
        if xf.ndim != 3 or xf.shape[2] != cfg.face_dim:
            raise ValueError(f"xf must be (B, T, {cfg.face_dim}), got {xf.shape}")
        batch, steps = xf.shape[:2]
        if xa.shape != (batch, steps, cfg.audio_dim):
            raise ValueError(f"xa must be ({batch}, {steps}, {cfg.audio_dim}), got {xa.shape}")
        if fm.shape != (batch, steps) or am.shape != (batch, steps):
            raise ValueError(f"fm/am must be ({batch}, {steps}), got {fm.shape} / {am.shape}")
        if steps > cfg.max_len:
            raise ValueError(f"sequence length {steps} exceeds max_len {cfg.max_len}")
        return tuple(torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in (xf, xa, fm, am))

    def forward_all(
        self, xf: np.ndarray, xa: np.ndarray, fm: np.ndarray, am: np.ndarray
    ) -> tuple[npt.NDArray[np.float32], ...]:
        """All six outputs as float32 arrays (fusion, face, audio logits; face, audio pools; z)."""
        tensors = self._prepare(xf, xa, fm, am)
        if self.num_threads is not None and torch.get_num_threads() != self.num_threads:
            torch.set_num_threads(self.num_threads)
        with torch.inference_mode():
            outputs = self.model(*tensors)
        return tuple(o.detach().cpu().numpy().astype(np.float32, copy=False) for o in outputs)

    def predict_logits(self, xf: np.ndarray, xa: np.ndarray, fm: np.ndarray, am: np.ndarray) -> npt.NDArray[np.float32]:
        """Fusion logits (B, num_classes), float32: the only transformer output serving uses."""
        return self.forward_all(xf, xa, fm, am)[0]
