"""Find and read RAVDESS speech files for the starter audio model, reporting every file it skips.

File names are ``MM-VV-EE-II-SS-RR-AA.<ext>``: modality (03 audio-only), vocal channel (01 speech),
emotion (01 neutral, 02 calm, 03 happy, 04 sad, 05 angry, 06 fearful, 07 disgust, 08 surprised),
intensity, statement, repetition, actor (01-24; odd male, even female). Neutral and calm become our
``neutral/calm``; surprised has no class of ours and is dropped. A file that cannot be used (a name
that does not parse, a dropped emotion, an unreadable or empty file) is reported with its reason and
skipped; one bad file never stops a scan. Audio that is not 16 kHz mono is down-mixed and
resampled with soxr (librosa's default resampler), so the model sees what the bot's 16 kHz mono
track reader gives it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from models.constants import CLASS_NAMES, SAMPLE_RATE

# RAVDESS emotion code -> index into CLASS_NAMES; 08 (surprised) has no class here.
EMOTION_TO_CLASS: Final[dict[int, int]] = {
    1: CLASS_NAMES.index("neutral/calm"),
    2: CLASS_NAMES.index("neutral/calm"),
    3: CLASS_NAMES.index("happy"),
    4: CLASS_NAMES.index("sad"),
    5: CLASS_NAMES.index("angry"),
    6: CLASS_NAMES.index("fearful"),
    7: CLASS_NAMES.index("disgust"),
}
DROPPED_EMOTIONS: Final[dict[int, str]] = {8: "surprised"}
AUDIO_SUFFIXES: Final[tuple[str, ...]] = (".flac", ".wav")
_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


@dataclass(frozen=True)
class RavdessFile:
    """One usable recording and what its name says."""

    path: Path
    actor: int
    emotion: int  # RAVDESS code, 1..7
    label: int  # index into CLASS_NAMES
    intensity: int
    statement: int
    repetition: int

    @property
    def female(self) -> bool:
        return self.actor % 2 == 0


@dataclass(frozen=True)
class RavdessScan:
    files: list[RavdessFile]
    skipped: list[tuple[str, str]]  # (path relative to the scanned folder, reason)


def parse_name(path: Path) -> RavdessFile | str:
    """The file's labels, or the reason it is not a usable RAVDESS speech file."""
    m = _NAME.match(path.stem)
    if m is None:
        return "name does not match MM-VV-EE-II-SS-RR-AA"
    modality, channel, emotion, intensity, statement, repetition, actor = (int(g) for g in m.groups())
    if modality not in (1, 3):
        return f"modality {modality:02d} is not audio (03 audio-only or 01 full AV)"
    if channel != 1:
        return f"vocal channel {channel:02d} is not speech (01)"
    if emotion in DROPPED_EMOTIONS:
        return f"emotion {emotion:02d} ({DROPPED_EMOTIONS[emotion]}) has no class here (dropped)"
    if emotion not in EMOTION_TO_CLASS:
        return f"unknown emotion code {emotion:02d}"
    if not 1 <= actor <= 24:
        return f"actor {actor:02d} out of range 01-24"
    if intensity not in (1, 2) or statement not in (1, 2) or repetition not in (1, 2):
        return "intensity, statement and repetition must be 01 or 02"
    return RavdessFile(path, actor, emotion, EMOTION_TO_CLASS[emotion], intensity, statement, repetition)


def scan_ravdess(root: str | Path) -> RavdessScan:
    """Every audio file under ``root`` (recursively, following symlinks, sorted), parsed; nothing is decoded yet."""
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"RAVDESS folder not found: {base}")
    files: list[RavdessFile] = []
    skipped: list[tuple[str, str]] = []
    found = [
        Path(folder) / name
        for folder, _, names in os.walk(base, followlinks=True)  # actor folders may be symlinks
        for name in names
        if Path(name).suffix.lower() in AUDIO_SUFFIXES
    ]
    for path in sorted(p for p in found if p.is_file()):
        parsed = parse_name(path)
        if isinstance(parsed, str):
            skipped.append((str(path.relative_to(base)), parsed))
        else:
            files.append(parsed)
    return RavdessScan(files, skipped)


def read_audio(path: Path) -> np.ndarray:
    """16 kHz mono float32 samples; raises ValueError with the reason when the file is unusable."""
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError/RuntimeError/OSError variously
        raise ValueError(f"unreadable audio ({type(exc).__name__}: {exc})") from exc
    if data.shape[0] == 0:
        raise ValueError("no audio samples")
    x = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if rate != SAMPLE_RATE:
        import librosa

        x = librosa.resample(x, orig_sr=int(rate), target_sr=SAMPLE_RATE, res_type="soxr_hq")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError("audio contains NaN or Inf")
    return x
