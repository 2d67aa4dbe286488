"""Bundles declare their extractors; unknown or inconsistent declarations are refused at load time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.bundle import BundleError, load_bundle, read_manifest
from models.extractors import (
    REFERENCE_AUDIO,
    REFERENCE_FACE,
    ExtractorError,
    ExtractorSpec,
    check_spec,
    known_extractors,
)
from models.family import load_any_bundle
from models.hoovik_import import import_hoovik


@pytest.fixture(scope="module")
def golden_bundle(golden_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return import_hoovik(golden_dir / "artifacts", tmp_path_factory.mktemp("g") / "golden")


def _rewrite(path: Path, edit: dict[str, object]) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(edit)
    (path / "manifest.json").write_text(json.dumps(manifest))


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_reference_bundle_declares_the_reference_extractors(golden_bundle: Path) -> None:
    manifest = read_manifest(golden_bundle)
    assert manifest["family"] == "reference"
    assert manifest["extractors"]["face"] == {"name": "mediapipe-landmarks", "version": 1, "dim": 326}
    assert manifest["extractors"]["audio"] == {"name": "wav2vec2-mean", "version": 1, "dim": 1024, "window_s": 0.6}
    loaded = load_any_bundle(golden_bundle)
    assert loaded.family == "reference"
    assert (loaded.plan.face, loaded.plan.audio) == (REFERENCE_FACE, REFERENCE_AUDIO)
    assert loaded.plan.window_samples == 9600 and loaded.plan.min_audio_samples == 2400


def test_a_manifest_without_declarations_is_a_reference_bundle(golden_bundle: Path, tmp_path: Path) -> None:
    old = _copy(golden_bundle, tmp_path / "old")
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["extractors"], manifest["family"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert load_bundle(old).face_extractor == REFERENCE_FACE


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ({"face": {"name": "openface", "version": 1, "dim": 326}, "audio": REFERENCE_AUDIO.to_dict()}, "'openface'"),
        ({"face": REFERENCE_FACE.to_dict(), "audio": {"name": "wav2vec2-mean", "version": 1, "dim": 768}}, "dim 768"),
        ({"face": {"name": "mediapipe-landmarks", "version": 9, "dim": 326}, "audio": REFERENCE_AUDIO.to_dict()}, "9"),
        ({"face": REFERENCE_FACE.to_dict()}, "audio extractor"),
    ],
)
def test_unknown_or_mismatched_extractors_are_refused_by_name(
    golden_bundle: Path, tmp_path: Path, declared: dict[str, object], message: str
) -> None:
    bad = _copy(golden_bundle, tmp_path / "bad")
    _rewrite(bad, {"extractors": declared})
    with pytest.raises(BundleError, match=message):
        load_any_bundle(bad)


def test_a_reference_bundle_cannot_declare_starter_extractors(golden_bundle: Path, tmp_path: Path) -> None:
    starter_face = next(s for s in known_extractors() if s.name == "fer-minixception")
    bad = _copy(golden_bundle, tmp_path / "bad")
    _rewrite(bad, {"extractors": {"face": starter_face.to_dict(), "audio": REFERENCE_AUDIO.to_dict()}})
    with pytest.raises(BundleError, match="fer-minixception"):
        load_bundle(bad)


def test_unknown_family_is_refused(golden_bundle: Path, tmp_path: Path) -> None:
    bad = _copy(golden_bundle, tmp_path / "bad")
    _rewrite(bad, {"family": "mystery"})
    with pytest.raises(BundleError, match="mystery"):
        load_any_bundle(bad)


def test_check_spec_window_must_match() -> None:
    with pytest.raises(ExtractorError, match="window"):
        check_spec(ExtractorSpec("audio", "wav2vec2-mean", 1, 1024, 1.0))
    assert check_spec(REFERENCE_AUDIO) is REFERENCE_AUDIO
