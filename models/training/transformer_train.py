"""The three-phase EmotionTransformer recipe (docs/training.md, "Transformer").

* **A** — clips with both face and audio only; warm-up + cosine; early stopping on val (both-only).
  The best A model is then measured on the *full* val set: that is the baseline B must beat.
* **B** — every clip, so single-modality inputs are learnt (with the model's own modality
  dropout on top); mixup from phase epoch 5; a checkpoint is kept only if it beats the best so far.
* **C** — a low-LR polish without mixup; an equal-weight SWA average over the last epochs is kept
  only if it beats the best checkpoint on val.

Every phase: fresh AdamW (weight decay 1e-4), LR warm-up then cosine per epoch, grad-norm clip 1.0,
focal CE (γ 1, label smoothing, class weights) on the fusion head plus the face/audio auxiliary
heads (0.70/0.15/0.15), and on batches without mixup SupCon + batch-hard triplet on ``z`` and the
separation hinges. Sampling is with replacement, RAVDESS clips weighted up.

Determinism: the model is built with :func:`models.transformer.build_seeded_model`, dropout uses
torch's seeded global RNG, and sampling, augmentation and mixup draw from one seeded CPU generator
and one numpy generator, so a seed reproduces a CPU run exactly (same thread count).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.optim.swa_utils import AveragedModel

from models.constants import NUM_CLASSES
from models.training.augment import augment_batch, mixup_batch
from models.training.config import PhaseConfig, TransformerTrainConfig
from models.training.dataset import FeatureDataset
from models.training.losses import (
    class_weights,
    focal_ce,
    separation_loss,
    supcon_loss,
    supcon_schedule,
    triplet_loss,
)
from models.training.metrics import accuracy, balanced_accuracy
from models.training.runtime import MetricsLog, seed_everything, select_device
from models.transformer import EmotionTransformer, TransformerConfig, build_seeded_model, count_parameters

State = dict[str, Tensor]


@dataclass
class TensorData:
    """Normalised sequences of one split as CPU tensors, with labels and the RAVDESS flag."""

    xf: Tensor
    xa: Tensor
    fm: Tensor
    am: Tensor
    y: Tensor
    ravdess: Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, rows: Tensor) -> TensorData:
        return TensorData(*(t[rows] for t in (self.xf, self.xa, self.fm, self.am, self.y, self.ravdess)))

    def both_rows(self) -> Tensor:
        return torch.nonzero((self.fm.sum(dim=1) > 0) & (self.am.sum(dim=1) > 0)).flatten()


def tensor_data(ds: FeatureDataset, split: str) -> TensorData:
    """A split of the dataset, normalised with its train stats (the predictor's input space)."""
    rows = ds.indices(split)
    xf, xa, fm, am = ds.normalised(rows)
    return TensorData(
        xf=torch.from_numpy(xf),
        xa=torch.from_numpy(xa),
        fm=torch.from_numpy(fm),
        am=torch.from_numpy(am),
        y=torch.from_numpy(ds.label[rows].astype(np.int64)),
        ravdess=torch.from_numpy(ds.corpus[rows] == "ravdess"),
    )


def _phase_data(phase: PhaseConfig, data: TensorData) -> TensorData:
    """The clips a phase trains on: ``all``, or ``both`` (face and audio present)."""
    if phase.data == "all":
        return data
    if phase.data == "both":
        return data.subset(data.both_rows())
    raise ValueError(f"phase data must be 'all' or 'both', got {phase.data!r}")


def lr_at(epoch: int, base: float, warmup: int, total: int) -> float:
    """Linear warm-up ``base·(e+1)/W`` for ``e < W``, then cosine ``base·½(1+cos(π(e−W)/max(1,E−W)))``."""
    if epoch < warmup:
        return base * (epoch + 1) / warmup
    return base * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup) / max(1, total - warmup)))


@dataclass
class EvalResult:
    loss: float
    accuracy: float
    balanced_accuracy: float

    def score(self, metric: str) -> float:
        return self.balanced_accuracy if metric == "balanced_accuracy" else self.accuracy


@dataclass
class _Best:
    score: float = -math.inf
    loss: float = math.inf
    state: State | None = None
    source: str = ""

    def beaten_by(self, result: EvalResult, metric: str, min_delta: float) -> bool:
        """A clear gain on the metric, or the same metric with a lower val loss."""
        s = result.score(metric)
        return s > self.score + min_delta or (s >= self.score and result.loss < self.loss)


@dataclass
class TransformerResult:
    """The best weights, the architecture and what training measured on the way."""

    state: State
    config: TransformerConfig
    metrics: dict[str, Any] = field(default_factory=dict)


def _copy_state(model: torch.nn.Module) -> State:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


class TransformerTrainer:
    """Runs phases A, B and C on a train/val pair and returns the best model."""

    def __init__(self, config: TransformerTrainConfig, seed: int, log: MetricsLog | None = None) -> None:
        if config.select_metric not in ("accuracy", "balanced_accuracy"):
            raise ValueError(f"select_metric must be accuracy or balanced_accuracy, got {config.select_metric!r}")
        self.cfg = config
        self.seed = seed
        self.log = log or MetricsLog()
        self.device = select_device(config.device)
        self.arch = TransformerConfig.from_dict({**TransformerConfig().to_dict(), **config.architecture})
        self._weight: Tensor | None = None
        self._gen = torch.Generator()
        self._rng = np.random.default_rng(seed)
        self._global_epoch = 0

    # ---------------------------------------------------------------------------------------------

    def fit(self, train: TensorData, val: TensorData) -> TransformerResult:
        """Phases A, B, C; torch's CPU thread count is set for the run and restored afterwards."""
        previous = torch.get_num_threads()
        if self.cfg.threads > 0:
            torch.set_num_threads(self.cfg.threads)
        try:
            return self._fit(train, val)
        finally:
            torch.set_num_threads(previous)

    def _fit(self, train: TensorData, val: TensorData) -> TransformerResult:
        started = time.monotonic()
        seed_everything(self.seed)
        self._gen.manual_seed(self.seed)
        self._rng = np.random.default_rng(self.seed)
        self._global_epoch = 0
        model = build_seeded_model(self.seed, self.arch).to(self.device)
        counts = np.bincount(train.y.numpy(), minlength=NUM_CLASSES)
        self._weight = torch.from_numpy(class_weights(counts, self.cfg.loss.class_boost)).to(self.device)
        self.log.write(
            "transformer_start",
            device=str(self.device),
            parameters=count_parameters(model),
            train=len(train),
            val=len(val),
            class_weights=self._weight.cpu().tolist(),
        )
        metric = self.cfg.select_metric
        phases: dict[str, Any] = {}

        # Phase A: complete pairs only (``data = "both"``), judged on the both-modality val clips.
        tr_a, va_a = _phase_data(self.cfg.phase_a, train), _phase_data(self.cfg.phase_a, val)
        best = _Best(state=_copy_state(model), source="init")
        if len(tr_a) >= 2 and len(va_a) > 0:
            best, phases["A"] = self._phase("A", self.cfg.phase_a, model, tr_a, va_a, best)
        else:
            phases["A"] = {"skipped": "no train/val clips for phase A's data selection"}
        assert best.state is not None
        model.load_state_dict(best.state)
        baseline = self.evaluate(model, val)
        self.log.write(
            "baseline",
            phase="A",
            val_loss=baseline.loss,
            val_accuracy=baseline.accuracy,
            val_balanced_accuracy=baseline.balanced_accuracy,
        )
        best = _Best(baseline.score(metric), baseline.loss, best.state, "A")

        # Phase B: everything, mixup after warm-up; must beat A on the full val set.
        best, phases["B"] = self._phase("B", self.cfg.phase_b, model, _phase_data(self.cfg.phase_b, train), val, best)
        assert best.state is not None
        model.load_state_dict(best.state)

        # Phase C: low-LR polish with an SWA tail.
        best, phases["C"] = self._phase("C", self.cfg.phase_c, model, _phase_data(self.cfg.phase_c, train), val, best)
        assert best.state is not None
        model.load_state_dict(best.state)

        final = self.evaluate(model, val)
        metrics = {
            "val_loss": final.loss,
            "val_accuracy": final.accuracy,
            "val_balanced_accuracy": final.balanced_accuracy,
            "baseline_val_accuracy": baseline.accuracy,
            "best_from": best.source,
            "phases": phases,
            "select_metric": metric,
            "device": str(self.device),
            "parameters": count_parameters(model),
            "seconds": round(time.monotonic() - started, 3),
        }
        self.log.write("transformer_done", **metrics)
        return TransformerResult(state=best.state, config=self.arch, metrics=metrics)

    # ---------------------------------------------------------------------------------------------

    def _phase(
        self, name: str, phase: PhaseConfig, model: EmotionTransformer, train: TensorData, val: TensorData, best: _Best
    ) -> tuple[_Best, dict[str, Any]]:
        if phase.epochs <= 0:
            return best, {"epochs_run": 0}
        optimiser = torch.optim.AdamW(model.parameters(), lr=phase.lr, weight_decay=self.cfg.weight_decay)
        swa = AveragedModel(model) if phase.swa_start is not None else None
        swa_epochs = 0
        since_best = 0
        epochs_run = 0
        stopped_early = False
        for epoch in range(phase.epochs):
            lr = lr_at(epoch, phase.lr, phase.warmup, phase.epochs)
            for group in optimiser.param_groups:
                group["lr"] = lr
            train_loss, mixed = self._train_epoch(model, optimiser, train, phase, epoch)
            result = self.evaluate(model, val)
            improved = best.beaten_by(result, self.cfg.select_metric, phase.min_delta)
            if improved:
                best = _Best(result.score(self.cfg.select_metric), result.loss, _copy_state(model), name)
                since_best = 0
            else:
                since_best += 1
            if swa is not None and phase.swa_start is not None and epoch >= phase.swa_start:
                swa.update_parameters(model)
                swa_epochs += 1
            self.log.write(
                "epoch",
                phase=name,
                epoch=epoch,
                global_epoch=self._global_epoch,
                lr=lr,
                train_loss=train_loss,
                mixup_batches=mixed,
                val_loss=result.loss,
                val_accuracy=result.accuracy,
                val_balanced_accuracy=result.balanced_accuracy,
                improved=improved,
                best_score=best.score,
            )
            self._global_epoch += 1
            epochs_run += 1
            if since_best >= phase.patience:
                stopped_early = True
                break
        summary: dict[str, Any] = {"epochs_run": epochs_run, "stopped_early": stopped_early, "best_score": best.score}
        if swa is not None:
            summary["swa_epochs"] = swa_epochs
            summary["swa_kept"] = False
            if swa_epochs:
                averaged: EmotionTransformer = swa.module  # type: ignore[assignment]
                result = self.evaluate(averaged, val)
                summary["swa_val_accuracy"] = result.accuracy
                if result.score(self.cfg.select_metric) > best.score:
                    best = _Best(
                        result.score(self.cfg.select_metric), result.loss, _copy_state(averaged), f"{name}-swa"
                    )
                    summary["swa_kept"] = True
                self.log.write(
                    "swa", phase=name, epochs=swa_epochs, val_accuracy=result.accuracy, kept=summary["swa_kept"]
                )
        return best, summary

    def _train_epoch(
        self,
        model: EmotionTransformer,
        optimiser: torch.optim.Optimizer,
        data: TensorData,
        phase: PhaseConfig,
        epoch: int,
    ) -> tuple[float, int]:
        cfg = self.cfg
        model.train()
        weights = torch.where(data.ravdess, phase.ravdess_weight, 1.0).to(torch.float64)
        order = torch.multinomial(weights, len(data), replacement=True, generator=self._gen)
        total, batches, mixed = 0.0, 0, 0
        sc_weight, tau = supcon_schedule(
            self._global_epoch,
            cfg.loss.supcon_start,
            cfg.loss.supcon_ramp,
            cfg.loss.supcon_max,
            cfg.loss.supcon_tau,
            cfg.loss.supcon_tau_decay,
            cfg.loss.supcon_tau_min,
        )
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            if idx.numel() < 2:
                continue  # contrastive terms need pairs; a 1-sample tail batch adds nothing
            xf, xa, fm, am = augment_batch(
                data.xf[idx], data.xa[idx], data.fm[idx], data.am[idx], cfg.augment, self._gen
            )
            y = data.y[idx]
            y_b: Tensor | None = None
            lam = 1.0
            if phase.mixup and epoch >= phase.mixup_start and self._rng.random() < cfg.mixup_p:
                draw = float(self._rng.beta(cfg.mixup_alpha, cfg.mixup_alpha))
                lam = max(draw, 1.0 - draw)
                xf, xa, fm, am, perm = mixup_batch(xf, xa, fm, am, lam, self._gen)
                y_b = y[perm]
                mixed += 1
            dev = self.device
            xf, xa, fm, am, y = xf.to(dev), xa.to(dev), fm.to(dev), am.to(dev), y.to(dev)
            fusion, face_logits, audio_logits, _, _, z = model(xf, xa, fm, am)
            loss = self._main_loss(fusion, face_logits, audio_logits, y, None if y_b is None else y_b.to(dev), lam)
            if y_b is None:
                if sc_weight > 0:
                    loss = loss + sc_weight * supcon_loss(z, y, tau)
                if cfg.loss.triplet_weight > 0:
                    loss = loss + cfg.loss.triplet_weight * triplet_loss(z, y, cfg.loss.triplet_margin)
                loss = loss + separation_loss(fusion, y, cfg.loss.sep_sad, cfg.loss.sep_fear, cfg.loss.sep_disgust)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimiser.step()
            total += float(loss.detach())
            batches += 1
        return (total / batches if batches else float("nan")), mixed

    def _criterion(self, logits: Tensor, target: Tensor) -> Tensor:
        lc = self.cfg.loss
        return focal_ce(logits, target, self._weight, lc.label_smoothing, lc.focal_gamma)

    def _main_loss(
        self, fusion: Tensor, face: Tensor, audio: Tensor, y: Tensor, y_b: Tensor | None, lam: float
    ) -> Tensor:
        lc = self.cfg.loss
        total = fusion.new_zeros(())
        for weight, logits in ((lc.w_fusion, fusion), (lc.w_face, face), (lc.w_audio, audio)):
            term = self._criterion(logits, y)
            if y_b is not None:
                term = lam * term + (1.0 - lam) * self._criterion(logits, y_b)
            total = total + weight * term
        return total

    @torch.no_grad()
    def evaluate(self, model: EmotionTransformer, data: TensorData) -> EvalResult:
        """Val loss (the fusion head's training criterion), accuracy and balanced accuracy."""
        model.eval()
        logits = self.logits(model, data)
        loss = float(self._criterion(logits.to(self.device), data.y.to(self.device)))
        pred = logits.argmax(dim=1).numpy()
        y = data.y.numpy()
        return EvalResult(loss=loss, accuracy=accuracy(y, pred), balanced_accuracy=balanced_accuracy(y, pred))

    @torch.no_grad()
    def logits(self, model: EmotionTransformer, data: TensorData) -> Tensor:
        """Fusion logits for every row, in eval mode, on CPU."""
        was_training = model.training
        model.eval()
        out = []
        bs = self.cfg.eval_batch_size
        for start in range(0, len(data), bs):
            sl = slice(start, start + bs)
            tensors = (t[sl].to(self.device) for t in (data.xf, data.xa, data.fm, data.am))
            out.append(model(*tensors)[0].float().cpu())
        model.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, NUM_CLASSES)


def train_transformer(
    ds: FeatureDataset, config: TransformerTrainConfig, seed: int, log: MetricsLog | None = None
) -> TransformerResult:
    """Train on the dataset's train split, select on val; returns the best model."""
    trainer = TransformerTrainer(copy.deepcopy(config), seed, log)
    return trainer.fit(tensor_data(ds, "train"), tensor_data(ds, "val"))
