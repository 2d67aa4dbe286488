"""What to replay: media files, folders of them, or a manifest naming participants and offsets.

Every input becomes one :class:`ReplayInput`: one file, one participant. The participant id comes
from the manifest or, for plain files, from the file name, so that a timeline line can always be
traced back to its file. Problems with a single entry (a missing file, an extension that is not
media) are returned as :class:`InputError` values next to the good inputs instead of being raised,
because one bad entry must not stop the others from being replayed.

Manifest formats (paths are relative to the manifest's folder):

* JSON: a list of entries, or ``{"participants": [...]}``; an entry is a path string or an object
  with ``file`` (or ``path``), optional ``participant`` (or ``participantId``/``id``), ``name`` and
  ``offset`` (seconds on the session timeline, default 0);
* CSV: a header row with ``file`` and optional ``participant``, ``name``, ``offset`` columns.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MEDIA_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".3gp", ".aac", ".avi", ".flac", ".flv", ".m4a", ".m4v", ".mka", ".mkv", ".mov", ".mp3",
        ".mp4", ".mpeg", ".mpg", ".mts", ".oga", ".ogg", ".ogv", ".opus", ".ts", ".wav", ".webm",
    }
)  # fmt: skip
MANIFEST_EXTENSIONS: frozenset[str] = frozenset({".json", ".csv"})


@dataclass(frozen=True)
class ReplayInput:
    """One recording of one participant; ``offset_s`` places its time zero on the session timeline."""

    path: Path
    participant_id: str
    name: str = ""
    offset_s: float = 0.0


@dataclass(frozen=True)
class InputError:
    """An entry that cannot be replayed, with the reason shown to the user."""

    path: Path
    message: str
    participant_id: str | None = None


class ManifestError(ValueError):
    """The manifest itself is unreadable; nothing in it can be replayed."""


def resolve_inputs(args: Sequence[str | Path]) -> tuple[list[ReplayInput], list[InputError]]:
    """Expand files, folders and manifests into inputs, in a stable order, with unique ids.

    A folder contributes its media files (by extension, sorted by name, not recursive); a file
    with an unknown extension is reported as an error rather than guessed at.
    """
    entries: list[ReplayInput] = []
    errors: list[InputError] = []
    for raw in args:
        path = Path(raw)
        if path.is_dir():
            media = sorted(p for p in path.iterdir() if p.is_file() and _is_media(p))
            if not media:
                errors.append(InputError(path, f"folder {path} holds no media files ({_known()})"))
            entries.extend(ReplayInput(p, p.stem) for p in media)
        elif path.suffix.lower() in MANIFEST_EXTENSIONS:
            try:
                entries.extend(read_manifest(path))
            except ManifestError as exc:
                errors.append(InputError(path, str(exc)))
        elif not path.exists():
            errors.append(InputError(path, f"{path}: no such file"))
        elif not _is_media(path):
            errors.append(
                InputError(path, f"{path}: unsupported extension {path.suffix or '(none)'!r}; expected {_known()}")
            )
        else:
            entries.append(ReplayInput(path, path.stem))
    good: list[ReplayInput] = []
    for entry in entries:
        if not entry.path.is_file():
            errors.append(InputError(entry.path, f"{entry.path}: no such file", entry.participant_id))
        elif not _is_media(entry.path):
            errors.append(
                InputError(
                    entry.path,
                    f"{entry.path}: unsupported extension {entry.path.suffix or '(none)'!r}; expected {_known()}",
                    entry.participant_id,
                )
            )
        else:
            good.append(entry)
    return _unique_ids(good), errors


def read_manifest(path: Path) -> list[ReplayInput]:
    """Read a JSON or CSV manifest; raises :class:`ManifestError` with the line or entry at fault."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read manifest: {exc}") from exc
    base = path.parent
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{path}: invalid JSON: {exc}") from exc
        items = data.get("participants") if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise ManifestError(f"{path}: expected a list of entries or {{'participants': [...]}}")
        return [_entry(item, base, f"{path} entry {i + 1}") for i, item in enumerate(items)]
    rows = list(csv.DictReader(text.splitlines()))
    if rows and not any(k and k.strip().lower() in ("file", "path") for k in rows[0]):
        raise ManifestError(f"{path}: the CSV header needs a 'file' column")
    return [
        _entry({(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}, base, f"{path} line {i + 2}")
        for i, row in enumerate(rows)
    ]


def _entry(item: Any, base: Path, where: str) -> ReplayInput:
    if isinstance(item, str):
        item = {"file": item}
    if not isinstance(item, dict):
        raise ManifestError(f"{where}: expected a path or an object")
    file = item.get("file") or item.get("path")
    if not isinstance(file, str) or not file:
        raise ManifestError(f"{where}: missing 'file'")
    path = Path(file) if Path(file).is_absolute() else base / file
    pid = item.get("participant") or item.get("participantid") or item.get("participantId") or item.get("id")
    name = item.get("name") or ""
    raw_offset = item.get("offset", item.get("offset_s", 0.0))
    try:
        offset = float(raw_offset) if raw_offset not in (None, "") else 0.0
    except (TypeError, ValueError) as exc:
        raise ManifestError(f"{where}: offset {raw_offset!r} is not a number of seconds") from exc
    if not math.isfinite(offset):
        raise ManifestError(f"{where}: offset must be finite")
    return ReplayInput(path, str(pid) if pid else path.stem, str(name), offset)


def _unique_ids(entries: Iterable[ReplayInput]) -> list[ReplayInput]:
    """Suffix repeated ids (``a``, ``a-2``, ``a-3``) so every timeline line names one file."""
    used: set[str] = set()
    out: list[ReplayInput] = []
    for e in entries:
        pid, n = e.participant_id, 1
        while pid in used:
            n += 1
            pid = f"{e.participant_id}-{n}"
        used.add(pid)
        out.append(ReplayInput(e.path, pid, e.name, e.offset_s))
    return out


def _is_media(path: Path) -> bool:
    return path.suffix.lower() in MEDIA_EXTENSIONS and not path.name.startswith(".")


def _known() -> str:
    return "one of " + " ".join(sorted(MEDIA_EXTENSIONS))
