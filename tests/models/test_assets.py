"""Asset lookup order, clear errors, and atomic fetching (no network: file:// URLs and fakes)."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub
import pytest

import models
from models import assets
from models.assets import (
    FACE_ASSET_NAME,
    AssetFetchError,
    AssetNotFoundError,
    cache_dir,
    fetch_face_asset,
    fetch_wav2vec2,
    locate_face_asset,
)


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty cache, no $HOOVIK_SHARED, and a fake checkout with no shared folder beside it."""
    monkeypatch.setenv("HOOVIK_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HOOVIK_SHARED", raising=False)
    fake_init = tmp_path / "checkout" / "repo" / "models" / "__init__.py"
    monkeypatch.setattr(models, "__file__", str(fake_init))
    return tmp_path


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"task")
    return path


def test_cache_dir_env_and_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOOVIK_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("HOOVIK_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "hoovik-bot"


def test_nothing_found_lists_every_place(isolated: Path) -> None:
    with pytest.raises(AssetNotFoundError) as info:
        locate_face_asset()
    message = str(info.value)
    assert str(isolated / "cache" / FACE_ASSET_NAME) in message
    assert str(isolated / "checkout" / "shared" / "models" / FACE_ASSET_NAME) in message
    assert "hoovik-bot models fetch" in message
    assert isinstance(info.value, FileNotFoundError)


def test_order_configured_then_cache_then_env_shared_then_checkout(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    beside = _touch(isolated / "checkout" / "shared" / "models" / FACE_ASSET_NAME)
    assert locate_face_asset() == beside

    monkeypatch.setenv("HOOVIK_SHARED", str(isolated / "envshared"))
    env_shared = _touch(isolated / "envshared" / "models" / FACE_ASSET_NAME)
    assert locate_face_asset() == env_shared

    cached = _touch(isolated / "cache" / FACE_ASSET_NAME)
    assert locate_face_asset() == cached

    configured = _touch(isolated / "mine.task")
    assert locate_face_asset(configured) == configured
    assert locate_face_asset(str(configured)) == configured


def test_configured_but_missing_is_an_error_not_a_fallback(isolated: Path) -> None:
    _touch(isolated / "cache" / FACE_ASSET_NAME)
    with pytest.raises(AssetNotFoundError, match="configured face landmarker asset does not exist"):
        locate_face_asset(isolated / "typo.task")


def test_real_checkout_layout_finds_shared_asset(
    face_asset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With an empty cache the lookup lands where conftest found it ($HOOVIK_SHARED or ../shared)."""
    monkeypatch.setenv("HOOVIK_CACHE", str(tmp_path / "empty-cache"))
    assert locate_face_asset().resolve() == face_asset.resolve()


def test_fetch_face_asset_is_atomic(tmp_path: Path, face_asset: Path) -> None:
    dest = fetch_face_asset(tmp_path / "dl", url=face_asset.resolve().as_uri())
    assert dest == tmp_path / "dl" / FACE_ASSET_NAME
    assert dest.read_bytes() == face_asset.read_bytes()
    assert sorted(p.name for p in dest.parent.iterdir()) == [FACE_ASSET_NAME]


def test_fetch_face_asset_defaults_to_cache(isolated: Path, face_asset: Path) -> None:
    dest = fetch_face_asset(url=face_asset.resolve().as_uri())
    assert dest == isolated / "cache" / FACE_ASSET_NAME
    assert locate_face_asset() == dest


def test_fetch_face_asset_failure_says_where_to_put_it(tmp_path: Path) -> None:
    missing = (tmp_path / "nowhere.task").as_uri()
    with pytest.raises(AssetFetchError) as info:
        fetch_face_asset(tmp_path / "dl", url=missing)
    assert str(tmp_path / "dl" / FACE_ASSET_NAME) in str(info.value)
    assert list((tmp_path / "dl").iterdir()) == []  # no partial file left behind


def test_fetch_wav2vec2_passes_cache_and_wraps_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, object]] = []

    def fake_ok(repo_id: str, **kwargs: object) -> str:
        calls.append({"repo_id": repo_id, **kwargs})
        return str(tmp_path / "snap")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_ok)
    assert fetch_wav2vec2("org/model", tmp_path / "hf") == tmp_path / "snap"
    assert calls[0]["repo_id"] == "org/model"
    assert calls[0]["cache_dir"] == tmp_path / "hf"

    def fake_offline(repo_id: str, **kwargs: object) -> str:
        raise OSError("no route to host")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_offline)
    with pytest.raises(AssetFetchError) as info:
        fetch_wav2vec2("org/model", tmp_path / "hf")
    assert "org/model" in str(info.value) and str(tmp_path / "hf") in str(info.value)


def test_hf_cache_is_inside_bot_cache(isolated: Path) -> None:
    assert assets.hf_cache_dir() == isolated / "cache" / "hf"
