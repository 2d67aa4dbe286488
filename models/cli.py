"""``hoovik-bot models …``: bundles, assets and inspection commands, each printing JSON.

- ``import-hoovik DIR --out B``: the original's artefact directory → a bundle (restricted unpickler).
- ``demo-bundle --out B``: an untrained but valid bundle for offline demos (``trained: false``).
- ``fetch``: Wav2Vec2 weights and the face asset into the cache (needs a network; offline it says
  what to place where).
- ``face-features IMAGE…``: each image's 326-d vector or the reason no face was found.
- ``predict --bundle B --face F.npy --audio A.npy --face-mask FM.npy --audio-mask AM.npy
  [--normalised]``: mirrors the original's ``predict.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def add_models_parser(sub: Any) -> None:
    p = sub.add_parser("models", help="model bundles, assets and inspection")
    msub = p.add_subparsers(dest="models_command", required=True)

    q = msub.add_parser("import-hoovik", help="convert the original's artefact directory into a bundle")
    q.add_argument("dir")
    q.add_argument("--out", required=True, help="bundle directory to write")

    q = msub.add_parser("info", help="family, extractors, classes, provenance, licence and accuracy of a bundle")
    q.add_argument("bundle", nargs="?", default="starter", help="bundle directory (default: the shipped starter)")
    q.add_argument("--json", action="store_true", help="print JSON instead of text")

    q = msub.add_parser("demo-bundle", help="write an untrained (trained=false) bundle for offline demos")
    q.add_argument("--out", required=True)
    q.add_argument("--seed", type=int, default=0)

    q = msub.add_parser("fetch", help="download Wav2Vec2 weights and the face asset into the cache")
    q.add_argument("--audio-model", default=None)
    q.add_argument("--cache-dir", default=None)

    q = msub.add_parser("face-features", help="326-d face vectors of images")
    q.add_argument("images", nargs="+")
    q.add_argument("--face-asset", default=None)

    q = msub.add_parser("predict", help="run the predictor on saved sequences (like the original predict.py)")
    q.add_argument("--bundle", required=True)
    q.add_argument("--face", required=True, help="(10,326) .npy")
    q.add_argument("--audio", required=True, help="(10,1024) .npy")
    q.add_argument("--face-mask", required=True, help="(10,) .npy")
    q.add_argument("--audio-mask", required=True, help="(10,) .npy")
    q.add_argument(
        "--normalised",
        action="store_true",
        help="inputs are already z-scored (else the bundle's norm stats apply)",
    )


def _print(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=1, default=_json_default)
    sys.stdout.write("\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o).__name__)


def _cmd_import(args: argparse.Namespace) -> int:
    from models.bundle import load_bundle
    from models.hoovik_import import import_hoovik

    out = import_hoovik(args.dir, args.out)
    bundle = load_bundle(out)
    _print({"bundle": str(out), "bundleId": bundle.bundle_id, "trained": bundle.trained})
    return 0


def _cmd_demo_bundle(args: argparse.Namespace) -> int:
    from models.bundle import save_bundle
    from models.untrained import make_untrained_bundle

    bundle = make_untrained_bundle(args.seed)
    out = save_bundle(bundle, args.out)
    _print({"bundle": str(out), "bundleId": bundle.bundle_id, "trained": False})
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from models.assets import cache_dir, fetch_face_asset, fetch_wav2vec2
    from models.constants import DEFAULT_WAV2VEC2_ID

    cache = Path(args.cache_dir) if args.cache_dir else cache_dir()
    report: dict[str, Any] = {"cache": str(cache)}
    status = 0
    try:
        report["face_asset"] = str(fetch_face_asset(cache))
    except Exception as exc:
        report["face_asset_error"] = str(exc)
        status = 1
    try:
        report["wav2vec2"] = str(fetch_wav2vec2(args.audio_model or DEFAULT_WAV2VEC2_ID, cache / "hf"))
    except Exception as exc:
        report["wav2vec2_error"] = str(exc)
        status = 1
    _print(report)
    return status


def _read_image(path: str) -> np.ndarray:
    import av

    with av.open(path) as container:
        frame = next(container.decode(video=0))
        return np.asarray(frame.to_ndarray(format="rgb24"))


def _cmd_face(args: argparse.Namespace) -> int:
    from models.face import FaceFeatureExtractor

    out: list[dict[str, Any]] = []
    with FaceFeatureExtractor(args.face_asset) as extractor:
        for image in args.images:
            try:
                rgb = _read_image(image)
            except Exception as exc:
                out.append({"image": image, "vector": None, "reason": f"unreadable: {exc}"})
                continue
            res = extractor.extract(rgb)
            out.append(
                {
                    "image": image,
                    "vector": None if res.vector is None else [float(v) for v in res.vector],
                    "reason": res.reason,
                }
            )
    _print(out)
    return 0 if all(o["vector"] is not None for o in out) else 2


def _cmd_predict(args: argparse.Namespace) -> int:
    from models.bundle import load_bundle
    from models.predictor import Predictor

    bundle = load_bundle(args.bundle)
    xf = np.load(args.face).astype(np.float32)
    xa = np.load(args.audio).astype(np.float32)
    fm = np.load(args.face_mask).astype(np.float32)
    am = np.load(args.audio_mask).astype(np.float32)
    if not args.normalised:
        xf = bundle.norm.normalise_face(xf, fm)
        xa = bundle.norm.normalise_audio(xa, am)
    pred = Predictor(bundle).predict(xf, xa, fm, am)
    result = pred.to_dict()
    result.update({"bundleId": bundle.bundle_id, "trained": bundle.trained})
    _print(result)
    return 0 if pred.status == "ok" else 2


def _cmd_info(args: argparse.Namespace) -> int:
    from models.family import load_any_bundle
    from models.starter.shipped import starter_bundle_dir

    path = starter_bundle_dir() if args.bundle == "starter" else Path(args.bundle)
    info = load_any_bundle(path).describe()
    if args.json:
        _print(info)
        return 0
    print(format_info(info))
    return 0


def format_info(info: dict[str, Any]) -> str:
    """The human-readable ``models info`` text."""
    lines = [
        f"bundle     {info['bundleId']}  ({info['path']})",
        f"family     {info['family']}   trained: {str(info['trained']).lower()}",
    ]
    for modality, spec in info["extractors"].items():
        window = f", window {spec['window_s']} s" if "window_s" in spec else ""
        lines.append(f"{modality:<11}extractor {spec['name']} v{spec['version']} ({spec['dim']}-d{window})")
    lines.append(f"classes    {', '.join(info.get('classes') or [])}")
    licence = info.get("licence") or {}
    if licence:
        lines.append(f"licence    {licence.get('summary', '')}")
        for part in licence.get("parts", []):
            lines.append(f"           - {part}")
    prov = info.get("provenance") or {}
    for key in sorted(prov):
        lines.append(f"{'provenance' if key == sorted(prov)[0] else '':<11}{key}: {prov[key]}")
    metrics = info.get("metrics") or {}
    for key in sorted(metrics):
        value = metrics[key]
        if isinstance(value, (dict, list)):
            value = json.dumps(value)
        lines.append(f"{'metrics' if key == sorted(metrics)[0] else '':<11}{key}: {value}")
    if not metrics:
        lines.append("metrics    (none recorded in the manifest)")
    return "\n".join(lines)


def run_models_command(args: argparse.Namespace) -> int:
    handlers = {
        "info": _cmd_info,
        "import-hoovik": _cmd_import,
        "demo-bundle": _cmd_demo_bundle,
        "fetch": _cmd_fetch,
        "face-features": _cmd_face,
        "predict": _cmd_predict,
    }
    try:
        return handlers[args.models_command](args)
    except Exception as exc:
        print(f"hoovik-bot models {args.models_command}: error: {exc}", file=sys.stderr)
        return 1
