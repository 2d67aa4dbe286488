"""Dependencies run one way (docs/architecture.md, "Packages"):

- ``bot/pipeline`` (the step core) knows only ``models`` (and the bot's config);
- ``bot/live`` (the scheduler) and ``bot/replay`` (files on the media clock) build on the pipeline,
  and replay never imports the live engine;
- ``bot/webrtc`` builds on live and ``signaling.base``; ``bot/uploads`` on live;
- ``models`` knows no bot, no signaling and no WebRTC; ``signaling`` knows no aiortc and no models.

Every import statement (module level or inside a function) of every module is read with ``ast``;
``if TYPE_CHECKING:`` imports count too, so the rule is about what a package knows, not only what
it loads at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def _modules(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


def _violations(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in _modules(folder):
        for name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(REPO)} imports {name}")
    return bad


CORE_KNOWS_NO_SIGNALING = ("signaling", "aiohttp", "socketio")
RULES = [
    (
        "bot/pipeline",
        (
            "bot.live",
            "bot.webrtc",
            "bot.replay",
            "bot.contrib",
            "bot.uploads",
            "bot.cluster",
            "aiortc",
            *CORE_KNOWS_NO_SIGNALING,
        ),
    ),
    ("bot/replay", ("bot.live", "bot.webrtc", "bot.contrib", "bot.uploads", "bot.cluster", *CORE_KNOWS_NO_SIGNALING)),
    (
        "bot/live",
        ("bot.webrtc", "bot.uploads", "bot.contrib", "bot.replay", "bot.cluster", "aiortc", *CORE_KNOWS_NO_SIGNALING),
    ),
    ("bot/webrtc", ("bot.uploads", "bot.contrib", "bot.replay", "bot.cluster")),
    ("bot/uploads", ("bot.webrtc", "bot.contrib", "bot.replay", "bot.cluster")),
    ("models", ("bot", "signaling", "aiortc", "aioice", "aiohttp", "socketio")),
    ("signaling", ("aiortc", "aioice", "models")),
]


@pytest.mark.parametrize(("folder", "forbidden"), RULES, ids=[r[0] for r in RULES])
def test_dependencies_run_one_way(folder: str, forbidden: tuple[str, ...]) -> None:
    assert _modules(folder), f"{folder} has no modules"
    assert _violations(folder, forbidden) == []


def test_webrtc_sees_signaling_only_through_its_interface() -> None:
    """The participant and the router know ``signaling.base`` (the session interface), no client."""
    used = {name for path in _modules("bot/webrtc") for name in _imports(path) if name.startswith("signaling")}
    assert used <= {"signaling.base"}, used


def test_the_checker_sees_function_level_imports(tmp_path: Path) -> None:
    mod = tmp_path / "m.py"
    mod.write_text("def f():\n    from bot.live.engine import Engine\n    import aiortc\n")
    assert _imports(mod) == {"bot.live.engine", "aiortc"}
