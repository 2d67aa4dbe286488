"""What ``signaling`` may import: no models, no bot, no WebRTC stack, and no cycles between the
server's modules (docs/signaling.md, "Modules"). Read from the source with :mod:`ast`, not by importing."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "signaling"
FORBIDDEN = ("bot", "models", "aiortc", "av", "torch", "numpy")
MAX_LINES = 500
LONG_ALLOWED = {"messages.py"}  # one schema module per protocol (docs/signaling.md)


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (TYPE_CHECKING blocks and function bodies too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def modules() -> dict[str, set[str]]:
    return {f"signaling.{p.stem}": imports(p) for p in sorted(PACKAGE.glob("*.py"))}


def test_signaling_knows_no_models_bot_or_media() -> None:
    for module, names in modules().items():
        bad = sorted(n for n in names if n.split(".")[0] in FORBIDDEN)
        assert not bad, f"{module} imports {bad}"


def test_no_import_cycle_inside_signaling() -> None:
    graph = {m: {n for n in names if n in modules()} for m, names in modules().items()}

    def reach(start: str) -> set[str]:
        seen: set[str] = set()
        todo = list(graph[start])
        while todo:
            node = todo.pop()
            if node not in seen:
                seen.add(node)
                todo.extend(graph.get(node, ()))
        return seen

    cycles = sorted(m for m in graph if m in reach(m))
    assert not cycles, f"import cycles through {cycles}"
    # The launcher sees rooms only through RoomView: it imports none of the server's modules.
    assert not graph["signaling.launcher"] & {"signaling.hub", "signaling.server", "signaling.web", "signaling.rest"}
    assert "signaling.server" not in graph["signaling.web"]


def test_modules_stay_small() -> None:
    for path in PACKAGE.glob("*.py"):
        if path.name not in LONG_ALLOWED:
            lines = len(path.read_text().splitlines())
            assert lines <= MAX_LINES, f"signaling/{path.name} has {lines} lines"
