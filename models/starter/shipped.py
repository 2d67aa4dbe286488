"""Where the shipped starter bundle lives inside the installed package."""

from __future__ import annotations

from pathlib import Path

from models.bundle import BundleError

SHIPPED_DIR = Path(__file__).resolve().parent / "weights"


def starter_bundle_dir() -> Path:
    """The starter bundle that ships with the product (rebuilt by ``hoovik-bot train starter``)."""
    if not (SHIPPED_DIR / "manifest.json").is_file():
        raise BundleError(
            f"{SHIPPED_DIR}: the shipped starter bundle is missing from this installation; "
            "rebuild it with `hoovik-bot train starter --ravdess DIR --out "
            f"{SHIPPED_DIR}` or pass --bundle DIR"
        )
    return SHIPPED_DIR
