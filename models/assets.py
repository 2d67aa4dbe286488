"""Where model assets live, and how to fetch them once while a network is available.

The bot runs headless and is often deployed without network access, so nothing in the inference
path downloads anything implicitly. Assets are found in a fixed order, and when they are missing the
error says every place that was looked at and how to fix it (``hoovik-bot models fetch`` or where
to copy the file), instead of surfacing a bare MediaPipe or Hugging Face error from deep inside.

Face landmarker lookup order (:func:`locate_face_asset`):

1. the path configured explicitly (config file, CLI flag);
2. the cache: ``$HOOVIK_CACHE/face_landmarker.task`` (default ``~/.cache/hoovik-bot``);
3. ``$HOOVIK_SHARED/models/face_landmarker.task``;
4. ``shared/models/face_landmarker.task`` beside the repository checkout (development layout).
"""

from __future__ import annotations

import os
import tempfile
import urllib.request
from pathlib import Path
from typing import Final

import models

FACE_ASSET_NAME: Final[str] = "face_landmarker.task"
FACE_ASSET_URL: Final[str] = (
    "https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/face_landmarker.task"
)
FETCH_HINT: Final[str] = "run `hoovik-bot models fetch` on a machine with network access"


class AssetNotFoundError(FileNotFoundError):
    """A model asset is neither configured, cached nor shipped; the message says where to put it."""


class AssetFetchError(RuntimeError):
    """Downloading an asset failed (usually: no network); the message says what to place where."""


def cache_dir() -> Path:
    """Root of the bot's model cache: ``$HOOVIK_CACHE`` or ``~/.cache/hoovik-bot`` (not created here)."""
    env = os.environ.get("HOOVIK_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hoovik-bot"


def shared_dir() -> Path:
    """``$HOOVIK_SHARED``, else ``<checkout>/../shared`` (the development layout; may not exist)."""
    env = os.environ.get("HOOVIK_SHARED")
    return Path(env).expanduser() if env else Path(models.__file__).resolve().parents[2] / "shared"


def _shared_model_dirs() -> list[Path]:
    """``$HOOVIK_SHARED/models`` then ``<checkout>/../shared/models`` (the development layout)."""
    dirs: list[Path] = []
    env = os.environ.get("HOOVIK_SHARED")
    if env:
        dirs.append(Path(env).expanduser() / "models")
    dirs.append(Path(models.__file__).resolve().parents[2] / "shared" / "models")
    return dirs


def face_asset_candidates(configured: str | Path | None = None) -> list[Path]:
    """Every path :func:`locate_face_asset` tries, in order (exposed so errors and docs agree)."""
    candidates = [Path(configured).expanduser()] if configured is not None else []
    candidates.append(cache_dir() / FACE_ASSET_NAME)
    candidates.extend(d / FACE_ASSET_NAME for d in _shared_model_dirs())
    return candidates


def locate_face_asset(configured: str | Path | None = None) -> Path:
    """Return the first existing MediaPipe face landmarker bundle.

    An explicitly configured path that does not exist is an error even if a fallback exists: a
    typo in the config must not silently select a different model.
    """
    candidates = face_asset_candidates(configured)
    if configured is not None:
        if candidates[0].is_file():
            return candidates[0]
        raise AssetNotFoundError(
            f"configured face landmarker asset does not exist: {candidates[0]}\n"
            f"Fix the path, or drop the setting to use {cache_dir() / FACE_ASSET_NAME} "
            f"({FETCH_HINT})."
        )
    for path in candidates:
        if path.is_file():
            return path
    looked = "\n".join(f"  - {p}" for p in candidates)
    raise AssetNotFoundError(
        f"MediaPipe face landmarker asset {FACE_ASSET_NAME!r} not found. Looked in:\n{looked}\n"
        f"To fix: {FETCH_HINT}, or download {FACE_ASSET_URL} and place it at "
        f"{cache_dir() / FACE_ASSET_NAME}."
    )


def fetch_face_asset(dest_dir: Path | None = None, url: str = FACE_ASSET_URL, timeout: float = 30) -> Path:
    """Download the face landmarker bundle into ``dest_dir`` (default: the cache) and return its path.

    The download goes to a temporary file in the destination folder and is renamed into place, so
    a reader never sees a half-written bundle and an interrupted download leaves no file behind.
    """
    dest_dir = cache_dir() if dest_dir is None else Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / FACE_ASSET_NAME
    fd, tmp_name = tempfile.mkstemp(prefix=".face_landmarker.", suffix=".part", dir=dest_dir)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            while chunk := resp.read(1 << 16):
                out.write(chunk)
        if tmp.stat().st_size == 0:
            raise AssetFetchError(f"downloaded an empty file from {url}")
        os.replace(tmp, dest)
    except OSError as exc:  # URLError, HTTPError, timeouts and disk errors are all OSError
        raise AssetFetchError(
            f"could not download the face landmarker from {url}: {exc}\n"
            f"Without network access, copy face_landmarker.task (MediaPipe float16 v1) to {dest}."
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def hf_cache_dir() -> Path:
    """Hugging Face cache used for Wav2Vec2: a ``hf`` folder inside :func:`cache_dir`."""
    return cache_dir() / "hf"


def fetch_wav2vec2(model_id: str, cache: Path | None = None) -> Path:
    """Download a Wav2Vec2 snapshot into the bot's Hugging Face cache and return its local folder.

    Only the files :func:`models.audio.load_wav2vec2` needs are fetched (config, preprocessor and
    weights), not the model card or optional ONNX exports.
    """
    from huggingface_hub import snapshot_download

    cache = hf_cache_dir() if cache is None else Path(cache)
    try:
        path = snapshot_download(
            model_id,
            cache_dir=cache,
            allow_patterns=["*.json", "*.safetensors", "*.bin", "*.txt"],
        )
    except Exception as exc:  # huggingface_hub raises many types (HTTP, offline, validation)
        raise AssetFetchError(
            f"could not download {model_id!r} into {cache}: {exc}\n"
            f"Without network access, copy a Hugging Face cache that holds {model_id!r} to {cache} "
            f"(or point the audio model setting at a local folder with config.json, "
            f"preprocessor_config.json and the weights)."
        ) from exc
    return Path(str(path))
