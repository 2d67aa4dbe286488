"""A synthetic feature dataset with class structure in both modalities, for tests and smoke runs.

Real corpora are large and licensed; the training pipeline still needs an end-to-end check that
it *learns*. Each clip here is ``class prototype + actor offset + per-frame noise`` in both the
326-d face space and the 1024-d audio space, built so that fusion matters:

* the face cannot tell angry from fearful (identical face prototypes), the audio cannot tell happy
  from sad — each single modality tops out near 5/6, both together can reach 1;
* a share of the clips has only one modality (``audio_only`` / ``video_only``), some have missing
  leading face frames or silent audio slots, as extraction produces them;
* actors shift every feature, so an actor-disjoint split is a real generalisation test.

The records go through :func:`models.training.dataset.assemble_dataset`, the path real extraction
takes, so splits, norm stats and the file format are the production ones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from models.constants import AUDIO_DIM, FACE_DIM, NUM_CLASSES, SEQ_LEN
from models.training.dataset import ClipRecord, FeatureDataset, assemble_dataset


@dataclass(frozen=True)
class SyntheticSpec:
    actors_per_corpus: int = 8
    clips_per_actor_class: int = 4
    corpora: tuple[str, ...] = ("ravdess", "crema-d")
    classes: tuple[int, ...] = tuple(range(NUM_CLASSES))
    signal: float = 0.6  # prototype scale relative to the per-frame noise (1.0)
    actor_scale: float = 0.6
    audio_only_p: float = 0.2
    video_only_p: float = 0.2
    partial_p: float = 0.2  # both-modality clips with a few missing leading face frames / silent audio slots
    seed: int = 7


def _records(spec: SyntheticSpec) -> list[ClipRecord]:
    rng = np.random.default_rng(spec.seed)
    face_proto = rng.standard_normal((NUM_CLASSES, FACE_DIM)).astype(np.float32)
    audio_proto = rng.standard_normal((NUM_CLASSES, AUDIO_DIM)).astype(np.float32)
    face_proto[1] = face_proto[0]  # face: angry ≡ fearful
    audio_proto[4] = audio_proto[3]  # audio: happy ≡ sad
    # Raw embeddings are not z-scores: give each dim its own offset and scale, as real features have.
    face_loc, face_scale = rng.normal(0, 2, FACE_DIM), rng.uniform(0.05, 2.0, FACE_DIM)
    audio_loc, audio_scale = rng.normal(0, 1, AUDIO_DIM), rng.uniform(0.1, 1.0, AUDIO_DIM)
    records: list[ClipRecord] = []
    for c_idx, corpus in enumerate(spec.corpora):
        for a in range(spec.actors_per_corpus):
            actor = str(a + 1 + 2000 * c_idx)
            face_off = rng.standard_normal(FACE_DIM) * spec.actor_scale
            audio_off = rng.standard_normal(AUDIO_DIM) * spec.actor_scale
            for cls in spec.classes:
                for k in range(spec.clips_per_actor_class):
                    u = rng.random()
                    profile = "both"
                    if u < spec.audio_only_p:
                        profile = "audio_only"
                    elif u < spec.audio_only_p + spec.video_only_p:
                        profile = "video_only"
                    face = spec.signal * face_proto[cls] + face_off + rng.standard_normal((SEQ_LEN, FACE_DIM))
                    audio = spec.signal * audio_proto[cls] + audio_off + rng.standard_normal((SEQ_LEN, AUDIO_DIM))
                    fm = np.ones(SEQ_LEN, np.float32)
                    am = np.ones(SEQ_LEN, np.float32)
                    if profile == "audio_only":
                        fm[:] = 0
                    elif profile == "video_only":
                        am[:] = 0
                    elif rng.random() < spec.partial_p:
                        fm[: rng.integers(1, 4)] = 0
                        am[rng.integers(0, SEQ_LEN)] = 0
                    face = (face * face_scale + face_loc) * fm[:, None]
                    audio = (audio * audio_scale + audio_loc) * am[:, None]
                    records.append(
                        ClipRecord(
                            clip_id=f"synthetic-{corpus}/a{actor}_c{cls}_k{k}",
                            face=face.astype(np.float32),
                            face_mask=fm,
                            audio=audio.astype(np.float32),
                            audio_mask=am,
                            label=cls,
                            actor=actor,
                            corpus=corpus,
                            profile=profile,
                        )
                    )
    return records


def make_synthetic_dataset(spec: SyntheticSpec | None = None, split_seed: int = 42) -> FeatureDataset:
    """Build (not save) a synthetic dataset; save it with :func:`models.training.dataset.save_dataset`."""
    s = spec or SyntheticSpec()
    return assemble_dataset(
        _records(s),
        seed=split_seed,
        extra_meta={"synthetic": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(s).items()}},
    )
