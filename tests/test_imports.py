"""The import drawing of service/: no circle, and arrows pointing one way.

api → domain → runtime, index, storage; the lower layers never import upwards; nothing in service/
imports the training (models/) or benchmark (bench/) trees. Read from the source (every import,
also those inside functions), so a lazy import cannot hide an arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[1] / "service"

# Which layers each layer may import (besides itself and the shared leaf modules below).
ALLOWED = {
    "api": {"domain"},
    "domain": {"runtime", "index", "storage"},
    "runtime": set(),
    "index": set(),
    "storage": set(),
}
SHARED = {"errors", "settings", "observability", "vectors"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SERVICE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """module → every service module (or other top-level package) it imports."""
    modules = {_module_name(p): p for p in SERVICE.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            for target in targets:
                if target.split(".")[0] in ("models", "bench"):
                    found.add(target.split(".")[0])
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    found.add(target)
        edges[name] = found
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in edges.get(node, ()):
            if succ not in edges:
                continue
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if parts[0] == "service" and len(parts) > 1 else parts[0]


def test_service_imports_have_no_circle() -> None:
    edges = _imports()
    assert len(edges) > 40  # the walk found the package
    assert _cycles(edges) == []


def test_service_imports_point_one_way() -> None:
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in _imports().items()
        if _layer(module) in ALLOWED
        for target in targets
        if _layer(target) != _layer(module)
        and _layer(target) not in SHARED
        and _layer(target) not in ALLOWED[_layer(module)]
    )
    assert wrong == []


def test_service_never_imports_models_or_bench() -> None:
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in _imports().items()
        for target in targets
        if target in ("models", "bench")
    )
    assert wrong == []


def test_the_checks_see_a_circle_and_a_wrong_arrow() -> None:
    """The drawing is read right: a made-up circle is found, and storage → domain is refused."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert "domain" not in ALLOWED[_layer("service.storage.faces")]
    assert _layer("service.api.routes.faces") == "api"
