"""Loss terms of the transformer recipe (docs/training.md, "Transformer"), as pure torch functions.

* :func:`focal_ce` — focal cross-entropy (γ = 1) on label-smoothed, class-weighted CE;
* :func:`class_weights` — (1/√n_c) normalised to mean 1, times a per-class boost;
* :func:`supcon_loss` — supervised contrastive loss (Khosla et al.) on L2-normalised embeddings;
* :func:`triplet_loss` — batch-hard triplet loss on L2-normalised embeddings;
* :func:`separation_loss` — hinge terms keeping sad/fearful/disgust apart from their usual confusions;
* :func:`supcon_schedule` — SupCon weight and temperature by global epoch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models.constants import CLASS_NAMES, NUM_CLASSES

ANGRY, FEARFUL, DISGUST, HAPPY, SAD, NEUTRAL = range(NUM_CLASSES)
assert CLASS_NAMES[FEARFUL] == "fearful" and CLASS_NAMES[SAD] == "sad" and CLASS_NAMES[NEUTRAL] == "neutral/calm"


def class_weights(counts: Sequence[int] | np.ndarray, boost: Sequence[float]) -> np.ndarray:
    """w_c = [(1/√n_c) / mean_k(1/√n_k)] · boost_c; a class with no samples gets weight 0."""
    n = np.asarray(counts, dtype=np.float64)
    if n.shape != (NUM_CLASSES,) or len(boost) != NUM_CLASSES:
        raise ValueError(f"need {NUM_CLASSES} class counts and boosts")
    inv = np.where(n > 0, 1.0 / np.sqrt(np.maximum(n, 1.0)), 0.0)
    present = inv[n > 0]
    base = inv / present.mean() if present.size else inv
    return (base * np.asarray(boost, dtype=np.float64)).astype(np.float32)


def focal_ce(logits: Tensor, target: Tensor, weight: Tensor | None, smoothing: float, gamma: float) -> Tensor:
    """mean over the batch of (1 − e^(−CE))^γ · CE, CE per sample with smoothing and class weights."""
    ce = F.cross_entropy(logits, target, weight=weight, label_smoothing=smoothing, reduction="none")
    if gamma == 0:
        return ce.mean()
    pt = torch.exp(-ce)
    return ((1.0 - pt) ** gamma * ce).mean()


def supcon_schedule(
    global_epoch: int, start: int, ramp: int, max_weight: float, tau0: float, tau_decay: float, tau_min: float
) -> tuple[float, float]:
    """(weight, temperature): weight 0 before ``start``, then a linear ramp to ``max_weight``."""
    weight = 0.0 if global_epoch < start else min(max_weight, max_weight * (global_epoch - start) / max(1, ramp))
    tau = max(tau_min, tau0 - tau_decay * global_epoch)
    return weight, tau


def supcon_loss(z: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """Supervised contrastive loss; anchors without a positive in the batch are left out."""
    feats = F.normalize(z, dim=1)
    sim = feats @ feats.T / temperature
    n = feats.shape[0]
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, -1e9)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    n_pos = positives.sum(dim=1)
    has_pos = n_pos > 0
    if not bool(has_pos.any()):
        return z.sum() * 0.0
    mean_log_prob = (log_prob * positives).sum(dim=1)[has_pos] / n_pos[has_pos]
    return -mean_log_prob.mean()


def triplet_loss(z: Tensor, labels: Tensor, margin: float) -> Tensor:
    """Batch-hard triplet loss: hardest positive vs hardest negative per anchor, Euclidean distance."""
    feats = F.normalize(z, dim=1)
    dist = torch.cdist(feats, feats)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(feats.shape[0], dtype=torch.bool, device=z.device)
    pos = same & ~eye
    neg = ~same
    valid = pos.any(dim=1) & neg.any(dim=1)
    if not bool(valid.any()):
        return z.sum() * 0.0
    hardest_pos = dist.masked_fill(~pos, float("-inf")).max(dim=1).values
    hardest_neg = dist.masked_fill(~neg, float("inf")).min(dim=1).values
    return F.relu(hardest_pos - hardest_neg + margin)[valid].mean()


def separation_loss(
    logits: Tensor,
    labels: Tensor,
    sad: tuple[float, float],
    fear: tuple[float, float],
    disgust: tuple[float, float],
) -> Tensor:
    """Hinges on p = softmax(logits), each summed over its class's rows and divided by the batch size.

    sad rows: relu(m − (p_sad − p_neutral)); fearful rows: relu(m − (p_fearful − p_sad)); disgust
    rows: relu(m − (p_disgust − p_sad)); each ``(m, weight)`` from the config.
    """
    p = torch.softmax(logits, dim=1)
    batch = logits.shape[0]
    total = logits.new_zeros(())
    for cls, other, (margin, weight) in ((SAD, NEUTRAL, sad), (FEARFUL, SAD, fear), (DISGUST, SAD, disgust)):
        rows = (labels == cls).to(p.dtype)
        hinge = F.relu(margin - (p[:, cls] - p[:, other]))
        total = total + weight * (hinge * rows).sum() / batch
    return total
