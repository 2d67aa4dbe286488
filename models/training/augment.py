"""Train-time augmentation and mixup for the transformer (docs/training.md, "Transformer"), vectorised over a batch.

All random draws come from one CPU ``torch.Generator`` so that a seed reproduces a run on any
device; the tensors are moved to the model's device afterwards.

Per sample: Gaussian noise on valid frames, smaller for near-static sequences (σ 0.025 / 0.06 face,
0.01 / 0.02 audio); rarely drop a whole modality (p 0.02 each); circularly roll the audio features
by up to ±3 frames (p 0.3; the mask is not rolled, as in the original); zero one audio frame
(p 0.3). Unlike the original, a modality is only dropped when the other one is present, so no
sample is left without any input (such a sample carries no signal, only noise in the loss).
"""

from __future__ import annotations

import torch
from torch import Tensor

from models.training.config import AugmentConfig


def _noise(x: Tensor, mask: Tensor, sigmas: tuple[float, float], static_std: float, gen: torch.Generator) -> Tensor:
    motion = x.std(dim=1).mean(dim=-1)  # mean temporal std per sample
    sigma = torch.where(motion < static_std, torch.tensor(sigmas[0]), torch.tensor(sigmas[1]))
    noise = torch.randn(x.shape, generator=gen) * sigma[:, None, None]
    return x + noise * mask[:, :, None]


def augment_batch(
    xf: Tensor, xa: Tensor, fm: Tensor, am: Tensor, cfg: AugmentConfig, gen: torch.Generator
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Return augmented copies of a CPU batch ``(xf (B,T,F), xa (B,T,A), fm (B,T), am (B,T))``."""
    b, t = fm.shape
    xf = _noise(xf, fm, cfg.face_noise, cfg.static_std, gen)
    xa = _noise(xa, am, cfg.audio_noise, cfg.static_std, gen)

    has_face = fm.sum(dim=1) > 0
    has_audio = am.sum(dim=1) > 0
    drop_face = (torch.rand(b, generator=gen) < cfg.drop_face_p) & has_audio
    drop_audio = (torch.rand(b, generator=gen) < cfg.drop_audio_p) & has_face & ~drop_face
    keep_f = (~drop_face).to(xf.dtype)
    keep_a = (~drop_audio).to(xa.dtype)
    xf, fm = xf * keep_f[:, None, None], fm * keep_f[:, None]
    xa, am = xa * keep_a[:, None, None], am * keep_a[:, None]

    roll = torch.rand(b, generator=gen) < cfg.roll_p
    shifts = torch.randint(-cfg.roll_max, cfg.roll_max + 1, (b,), generator=gen) * roll
    src = (torch.arange(t)[None, :] - shifts[:, None]) % t  # out[i] = in[i - shift], like torch.roll
    xa = torch.gather(xa, 1, src[:, :, None].expand(-1, -1, xa.shape[2]))

    zero = torch.rand(b, generator=gen) < cfg.zero_frame_p
    frame = torch.randint(0, max(1, t - 1), (b,), generator=gen)
    hit = torch.zeros(b, t, dtype=torch.bool)
    hit[torch.arange(b), frame] = zero
    xa = xa.masked_fill(hit[:, :, None], 0.0)
    return xf, xa, fm, am


def mixup_batch(
    xf: Tensor, xa: Tensor, fm: Tensor, am: Tensor, lam: float, gen: torch.Generator
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Mix each sample with a random partner: features **and masks** (masks become fractional).

    Returns the mixed tensors and the permutation, whose labels are the ``y_b`` of the loss.
    """
    perm = torch.randperm(fm.shape[0], generator=gen)
    mix = lam
    return (
        mix * xf + (1 - mix) * xf[perm],
        mix * xa + (1 - mix) * xa[perm],
        mix * fm + (1 - mix) * fm[perm],
        mix * am + (1 - mix) * am[perm],
        perm,
    )
