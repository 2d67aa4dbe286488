"""``hoovik-bot train …``: extraction, the component trainers, and ``train all``.

* ``extract`` — RAVDESS / CREMA-D folders and CSV manifests → a dataset folder (resumable).
* ``transformer`` / ``xgb`` / ``anomaly`` — train one component into ``<out>/components``.
* ``calibrate`` — fit the temperature and fusion weight from the stored components.
* ``all`` — every step (reusing up-to-date components), the bundle and the test report.

Each command prints a JSON summary on stdout; progress and logs go to stderr. Training settings
come from ``--config FILE`` (TOML or JSON, see ``docs/training.md``) and ``--set key.path=value``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from models.constants import DEFAULT_WAV2VEC2_ID


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train models: extract features, train components, build a calibrated bundle",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    sub = p.add_subparsers(dest="train_command", required=True)

    q = sub.add_parser("extract", help="labelled media → a feature dataset folder (resumable, parallel)")
    q.add_argument("--ravdess", action="append", default=[], help="RAVDESS folder (repeatable)")
    q.add_argument("--crema-d", action="append", default=[], help="CREMA-D folder (repeatable)")
    q.add_argument("--manifest", action="append", default=[], help="CSV manifest path,label,actor[,modality][,corpus]")
    q.add_argument("--out", required=True, help="dataset folder to write (dataset.npz, dataset.json, cache/)")
    q.add_argument("--audio-model", default=DEFAULT_WAV2VEC2_ID, help="Wav2Vec2 hub id or local folder")
    q.add_argument("--precision", choices=["fp32", "bf16", "int8"], default="fp32")
    q.add_argument("--face-asset", help="path to face_landmarker.task")
    q.add_argument("--workers", type=int, default=2, help="clips extracted in parallel (default 2)")
    q.add_argument("--seed", type=int, default=42, help="split seed (default 42)")
    q.add_argument("--min-actors", type=int, default=1, help="actors each split needs per corpus (default 1)")
    q.add_argument("--cache-dir", help="per-clip cache folder (default <out>/cache)")
    q.add_argument("--no-cache", action="store_true", help="extract every clip again, ignoring the cache")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(handler=run_extract)

    q = sub.add_parser(
        "starter",
        help="rebuild the shipped starter bundle: FER face network + RAVDESS-trained audio head (reproducible)",
    )
    q.add_argument("--ravdess", required=True, help="RAVDESS speech folder (Actor_NN/*.flac or .wav, 16 kHz)")
    q.add_argument(
        "--fer-weights",
        help="mini-Xception FER2013 Keras HDF5 file (default: ../shared/training/face-fer2013/ beside the checkout)",
    )
    q.add_argument("--out", required=True, help="bundle directory to write")
    q.add_argument("--report", help="report folder (default: <out>-report): report.json, confusion.png")
    q.add_argument("--seed", type=int, default=0, help="seed (default 0); same inputs + seed = same bundle hashes")
    q.add_argument("--test-actors", default="11,12,13,14", help="held-out actors, never trained on (default 11-14)")
    q.add_argument("--val-actors", default="9,10", help="validation actors for calibration (default 9,10)")
    q.set_defaults(handler=run_starter)

    for name, helptext, handler in (
        ("transformer", "train the EmotionTransformer (phases A, B, C)", run_transformer),
        ("xgb", "train the tabular model (median fill, PCA, XGBoost)", run_xgb),
        ("anomaly", "train the per-profile anomaly detectors", run_anomaly),
        ("calibrate", "fit the temperature (NLL) and the fusion weight on val", run_calibrate),
        ("all", "train everything, write the bundle and the test report", run_all),
    ):
        q = sub.add_parser(name, help=helptext)
        q.add_argument("--dataset", required=True, help="dataset folder written by `train extract`")
        q.add_argument("--out", required=True, help="run folder (components/, bundle/, report/, metrics.jsonl)")
        q.add_argument("--config", help="training config (TOML or JSON); defaults are the production values")
        q.add_argument(
            "--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. xgb.n_estimators=500"
        )
        q.add_argument("--seed", type=int, help="overrides the config's seed")
        q.add_argument("--device", help="transformer device: auto (default), cpu, cuda, mps")
        if name != "calibrate":
            q.add_argument("--force", action="store_true", help="retrain even when a matching component exists")
        q.set_defaults(handler=handler)


def run_starter(args: argparse.Namespace) -> int:
    from models.assets import shared_dir
    from models.starter.build import StarterBuildOptions, build_starter

    default_fer = shared_dir() / "training" / "face-fer2013" / "fer2013_mini_XCEPTION.102-0.66.hdf5"
    fer = Path(args.fer_weights) if args.fer_weights else default_fer
    if not fer.is_file():
        raise SystemExit(f"train starter: FER weights not found at {fer} (pass --fer-weights FILE)")

    def actors(text: str) -> tuple[int, ...]:
        return tuple(int(a) for a in text.split(",") if a.strip())

    summary = build_starter(
        StarterBuildOptions(
            ravdess=Path(args.ravdess),
            fer_weights=fer,
            out=Path(args.out),
            report=Path(args.report) if args.report else None,
            seed=args.seed,
            test_actors=actors(args.test_actors),
            val_actors=actors(args.val_actors),
        )
    )
    _print(summary)
    return 0


def _print(obj: Any) -> None:
    from models.training.runtime import json_safe

    json.dump(json_safe(obj), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


def run_extract(args: argparse.Namespace) -> int:
    from models.training.config import ExtractConfig
    from models.training.make_dataset import build_dataset

    if not (args.ravdess or args.crema_d or args.manifest):
        raise ValueError("give at least one --ravdess, --crema-d or --manifest")
    cfg = ExtractConfig(workers=args.workers, seed=args.seed, min_actors=args.min_actors)
    ds = build_dataset(
        Path(args.out),
        ravdess=[Path(p) for p in args.ravdess],
        crema_d=[Path(p) for p in args.crema_d],
        manifests=[Path(p) for p in args.manifest],
        face_asset=Path(args.face_asset) if args.face_asset else None,
        audio_model=args.audio_model,
        precision=args.precision,
        config=cfg,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        use_cache=not args.no_cache,
        progress=not args.quiet,
    )
    _print(
        {
            "dataset": str(ds.path),
            "clips": len(ds),
            "content_hash": ds.meta["content_hash"],
            "extraction": ds.meta["extraction"]["stats"],
            "skipped": ds.meta["skipped"],
            "splits": {k: ds.meta["summary"][k]["n"] for k in ("train", "val", "test")},
            "trainable": ds.meta["trainable"],
            "warnings": ds.meta["warnings"],
        }
    )
    return 0


def _config(args: argparse.Namespace) -> Any:
    from models.training.config import load_config

    overrides = list(args.set)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.device:
        overrides.append(f"transformer.device={json.dumps(args.device)}")
    return load_config(args.config, overrides)


def _run(args: argparse.Namespace) -> Any:
    from models.training.pipeline import open_run

    return open_run(Path(args.dataset), Path(args.out), _config(args))


def run_transformer(args: argparse.Namespace) -> int:
    from models.training.pipeline import step_transformer

    _, _, metrics = step_transformer(_run(args), force=args.force)
    _print({"component": "transformer", "metrics": metrics})
    return 0


def run_xgb(args: argparse.Namespace) -> int:
    from models.training.pipeline import step_tabular

    _, metrics = step_tabular(_run(args), force=args.force)
    _print({"component": "tabular", "metrics": metrics})
    return 0


def run_anomaly(args: argparse.Namespace) -> int:
    from models.training.pipeline import step_anomaly

    _, metrics = step_anomaly(_run(args), force=args.force)
    _print({"component": "anomaly", "metrics": metrics})
    return 0


def run_calibrate(args: argparse.Namespace) -> int:
    from models.training.pipeline import step_calibrate

    _, metrics = step_calibrate(_run(args), force=True)
    _print({"component": "ensemble", "metrics": metrics})
    return 0


def run_all(args: argparse.Namespace) -> int:
    from models.training.pipeline import train_all

    result = train_all(Path(args.dataset), Path(args.out), _config(args), force=args.force)
    test = result.report["test"]
    _print(
        {
            "bundle": str(result.bundle_path),
            "bundle_id": result.report["bundle_id"],
            "report": str(result.report_path),
            "test": {k: test[k] for k in ("n", "accuracy", "balanced_accuracy", "profiles", "anomaly_flag_rate")},
        }
    )
    return 0
