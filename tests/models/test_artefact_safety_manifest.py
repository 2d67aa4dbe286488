"""A reference bundle's manifest is validated field by field and covered by a hash.

Before, ``manifest.json`` was covered by no hash: ``trained: true``, NaN fusion weights or a
64-layer transformer config loaded (the last allocated ~5 GB before any shape check). Now every
field is validated before anything is allocated, ``manifest_sha256`` refuses an edited manifest,
and manifests written before the hash existed still load after the same validation.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from models.bundle import (
    MANIFEST_HASH,
    BundleError,
    files_bundle_id,
    load_bundle,
    manifest_digest,
    save_bundle,
)
from models.hoovik_import import import_hoovik

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def golden_bundle(golden_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return import_hoovik(golden_dir / "artifacts", tmp_path_factory.mktemp("safety") / "golden")


def _copy(src: Path, dst: Path) -> Path:
    return Path(shutil.copytree(src, dst))


def _manifest(path: Path) -> dict[str, Any]:
    return dict(json.loads((path / "manifest.json").read_text()))


def _write(path: Path, manifest: dict[str, Any], rehash: bool) -> None:
    """Write an edited manifest; ``rehash`` mimics an attacker who also recomputes the hash."""
    if rehash:
        manifest[MANIFEST_HASH] = manifest_digest(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest, indent=1))


def test_saved_manifest_carries_a_matching_hash(golden_bundle: Path) -> None:
    manifest = _manifest(golden_bundle)
    assert manifest[MANIFEST_HASH] == manifest_digest(manifest)
    assert manifest["bundle_id"] == files_bundle_id(manifest["files"], True)
    assert load_bundle(golden_bundle).manifest_verified is True


def test_any_edit_is_refused_as_an_edit(golden_bundle: Path, tmp_path: Path) -> None:
    bad = _copy(golden_bundle, tmp_path / "b")
    manifest = _manifest(bad)
    manifest["provenance"]["source_dir"] = "/somewhere/else"  # valid, but not what was built
    _write(bad, manifest, rehash=False)
    with pytest.raises(BundleError, match=r"manifest\.json: content does not match manifest_sha256"):
        load_bundle(bad)


def test_trained_flag_cannot_be_flipped(golden_dir: Path, golden_bundle: Path, tmp_path: Path) -> None:
    bad = _copy(golden_bundle, tmp_path / "b")
    manifest = _manifest(bad)
    manifest["trained"] = False
    _write(bad, manifest, rehash=False)
    with pytest.raises(BundleError, match=r"bundle_id .* does not match the files and trained=False"):
        load_bundle(bad)
    # Even with the hash recomputed (or removed) the id, derived from files + trained, gives it away.
    _write(bad, manifest, rehash=True)
    with pytest.raises(BundleError, match="does not match the files"):
        load_bundle(bad)
    manifest["trained"] = "yes"
    _write(bad, manifest, rehash=True)
    with pytest.raises(BundleError, match="'trained' must be true or false"):
        load_bundle(bad)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"temperature": float("nan")}, "temperature nan"),
        ({"temperature": 0.0}, "temperature 0.0"),
        ({"temperature": 1e9}, "temperature"),
        ({"w_modal": float("nan")}, "w_modal nan"),
        ({"w_modal": 0.9}, "weights sum to"),
        ({"w_modal": -0.5, "w_xgb": 1.5}, "w_modal -0.5"),
        ({"w_xgb": float("inf")}, "w_xgb inf"),
        ({"w_xgb": "0.5"}, "w_xgb '0.5'"),
    ],
)
def test_bad_fusion_parameters_are_refused(
    golden_bundle: Path, tmp_path: Path, edit: dict[str, Any], message: str
) -> None:
    bad = _copy(golden_bundle, tmp_path / "b")
    manifest = _manifest(bad)
    manifest["ensemble"].update(edit)
    _write(bad, manifest, rehash=True)  # the hash matches: validation alone must refuse it
    with pytest.raises(BundleError, match=r"manifest\.json: ensemble " + message):
        load_bundle(bad)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"num_layers": 64}, "num_layers = 64 outside"),
        ({"d_model": 4096, "dim_feedforward": 8192}, "d_model = 4096 outside"),
        ({"nhead": 6}, "divisible by nhead/2"),
        ({"nhead": 0}, "nhead must be a positive integer"),
        ({"face_dim": 300}, "face_dim 300"),
        ({"audio_dim": 768}, "audio_dim 768"),
        ({"num_classes": 3}, "num_classes 3"),
        ({"dropout": float("nan")}, "dropout must be a finite number"),
        ({"d_model": "256"}, "d_model must be a positive integer"),
        ({"max_len": 4}, "max_len 4"),
        ({"hidden": 1}, "unknown TransformerConfig keys"),
    ],
)
def test_bad_transformer_configs_are_refused(
    golden_bundle: Path, tmp_path: Path, edit: dict[str, Any], message: str
) -> None:
    bad = _copy(golden_bundle, tmp_path / "b")
    manifest = _manifest(bad)
    manifest["transformer"]["config"].update(edit)
    _write(bad, manifest, rehash=True)
    with pytest.raises(BundleError, match=r"manifest\.json: transformer config.*" + message):
        load_bundle(bad)


def test_huge_transformer_config_is_refused_before_allocating(golden_bundle: Path, tmp_path: Path) -> None:
    """The probe's 64-layer config: refused fast, with no large allocation, in a memory-capped child."""
    bad = _copy(golden_bundle, tmp_path / "b")
    manifest = _manifest(bad)
    manifest["transformer"]["config"].update({"num_layers": 64, "d_model": 1024, "dim_feedforward": 8192})
    _write(bad, manifest, rehash=True)
    # VmHWM, not ru_maxrss: the latter keeps the high-water mark of the forked parent across exec,
    # so under a large pytest process it would measure pytest, not this child.
    code = (
        "import re, sys\n"
        "from models.bundle import BundleError, load_bundle\n"
        "try:\n    load_bundle(sys.argv[1])\nexcept BundleError as e:\n    print('refused', e)\n"
        "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())\n"
        "print('peak_kb', hwm.group(1))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=240, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "refused" in proc.stdout and "num_layers = 64" in proc.stdout, proc.stdout
    peak_kb = int(proc.stdout.split("peak_kb")[-1])
    assert peak_kb < 1_500_000, f"peak RSS {peak_kb} kB: something was allocated before the check"


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("tabular", "pca_components", 10**9, "tabular.pca_components"),
        ("tabular", "n_iterations", 10**9, "tabular.n_iterations"),
        ("tabular", "num_classes", 9, "tabular.num_classes"),
        ("anomaly", "anomaly_dim", 10, "anomaly.anomaly_dim"),
        ("files", "tabular.safetensors", {"sha256": "x"}, "files.tabular.safetensors"),
    ],
)
def test_bad_meta_sections_are_refused(
    golden_bundle: Path, tmp_path: Path, section: str, key: str, value: Any, message: str
) -> None:
    bad = _copy(golden_bundle, tmp_path / "b")
    manifest = _manifest(bad)
    manifest[section][key] = value
    _write(bad, manifest, rehash=True)
    with pytest.raises(BundleError, match=r"manifest\.json: " + message):
        load_bundle(bad)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("threshold", float("nan"), "threshold nan"),
        ("n_trees", 10**9, "n_trees"),
        ("n_components", 10**9, "n_components"),
        ("name", "both", "name mismatch"),
    ],
)
def test_bad_detector_meta_is_refused(golden_bundle: Path, tmp_path: Path, key: str, value: Any, message: str) -> None:
    bad = _copy(golden_bundle, tmp_path / "b")
    manifest = _manifest(bad)
    manifest["anomaly"]["detectors"]["global_fallback"][key] = value
    _write(bad, manifest, rehash=True)
    with pytest.raises(BundleError, match=r"manifest\.json: anomaly\.detectors\.global_fallback.*" + message):
        load_bundle(bad)


def test_legacy_manifest_without_hash_loads_but_is_still_validated(
    golden_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = _copy(golden_bundle, tmp_path / "old")
    manifest = _manifest(old)
    del manifest[MANIFEST_HASH]
    _write(old, manifest, rehash=False)
    with caplog.at_level(logging.WARNING, logger="models.bundle"):
        legacy = load_bundle(old)
    assert legacy.manifest_verified is False and "no manifest_sha256" in caplog.text
    assert legacy.bundle_id == _manifest(golden_bundle)["bundle_id"]  # ids of existing bundles unchanged
    manifest["ensemble"]["w_modal"] = float("nan")
    _write(old, manifest, rehash=False)
    with pytest.raises(BundleError, match="w_modal nan"):
        load_bundle(old)


def test_resaving_a_legacy_bundle_adds_the_hash_and_keeps_the_id(golden_bundle: Path, tmp_path: Path) -> None:
    old = _copy(golden_bundle, tmp_path / "old")
    manifest = _manifest(old)
    del manifest[MANIFEST_HASH]
    _write(old, manifest, rehash=False)
    again = save_bundle(load_bundle(old), tmp_path / "again")
    resaved = _manifest(again)
    assert resaved[MANIFEST_HASH] == manifest_digest(resaved)
    assert resaved["bundle_id"] == manifest["bundle_id"]
    assert load_bundle(again).manifest_verified is True


def test_oversized_manifest_is_refused_unread(golden_bundle: Path, tmp_path: Path) -> None:
    bad = _copy(golden_bundle, tmp_path / "b")
    manifest = _manifest(bad)
    manifest["provenance"]["padding"] = "x" * (5 << 20)
    _write(bad, manifest, rehash=True)
    with pytest.raises(BundleError, match="larger than any manifest"):
        load_bundle(bad)


def test_import_refuses_bad_ensemble_weights(golden_dir: Path, tmp_path: Path) -> None:
    from models.hoovik_pickles import HoovikArtifactError

    art = tmp_path / "art"
    src = golden_dir / "artifacts"
    (art / "models" / "ensemble").mkdir(parents=True)
    (art / "extracted_dataset").symlink_to(src / "extracted_dataset")
    for sub in ("modal", "xgb", "anomaly"):
        (art / "models" / sub).symlink_to(src / "models" / sub)
    (art / "models" / "ensemble" / "weights.json").write_text('{"temperature": 0.3, "w_modal": NaN, "w_xgb": 0.5}')
    with pytest.raises(HoovikArtifactError, match=r"weights\.json: ensemble w_modal nan"):
        import_hoovik(art, tmp_path / "out")
