"""The package's shape, held against the code: the layers of the design (imports point down, no circles,
imports inside functions included), small modules and functions, and a reason beside every deferred import.

Layers, from the top: app.py -> ui / cli -> serve / batch / examples / train -> studio -> model / preprocess -> core.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Rank of each layer: an import may only go to a lower rank (or stay inside its own package).
RANKS = {"core": 0, "model": 1, "preprocess": 1, "studio": 2, "examples": 3, "batch": 3, "serve": 3, "train": 3,
         "cli": 4, "ui": 4, "app": 5}
#: What each layer may import, beyond the rank rule's "strictly lower", as the design names it.
ALLOWED = {
    "core": set(),
    "model": {"core"},
    "preprocess": {"core"},
    "studio": {"core", "model", "preprocess"},
    "examples": {"core", "preprocess"},
    "batch": {"core", "studio"},
    "serve": {"core", "studio"},
    "train": {"core", "model", "preprocess"},
}
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
MAX_APP_LINES = 150


def source_files() -> list[Path]:
    files = sorted((REPO_ROOT / "parts2whole").rglob("*.py")) + sorted((REPO_ROOT / "preprocess").rglob("*.py"))
    return files + [REPO_ROOT / "app.py"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "app":
        return "app"
    if parts[0] == "preprocess":
        return "preprocess"
    if parts[0] == "parts2whole" and len(parts) > 1 and parts[1] in RANKS:
        return parts[1]
    return None  # parts2whole/__init__.py and __main__.py: the package's front, checked apart


@lru_cache(maxsize=None)
def known_modules() -> frozenset[str]:
    return frozenset(module_name(path) for path in source_files())


def imports_of(path: Path) -> list[tuple[str, int]]:
    """(imported project module, line) for every import in the file, at any depth, relative ones resolved."""
    tree = ast.parse(path.read_text())
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.append((candidate if candidate in known_modules() else target, node.lineno))
    modules = known_modules()
    resolved = []
    for name, line in found:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name:
            resolved.append((name, line))
    return resolved


def test_imports_point_down():
    wrong = []
    for path in source_files():
        source_layer = layer_of(module_name(path))
        for target, line in imports_of(path):
            target_layer = layer_of(target)
            if source_layer is None or target_layer is None or target_layer == source_layer:
                continue
            allowed = ALLOWED.get(source_layer)
            ok = target_layer in allowed if allowed is not None else RANKS[target_layer] < RANKS[source_layer]
            if target_layer == "ui" and source_layer != "app":
                ok = False
            if not ok:
                wrong.append(f"{path.relative_to(REPO_ROOT)}:{line} ({source_layer}) imports {target} ({target_layer})")
    assert not wrong, "imports that do not point down:\n" + "\n".join(wrong)


def test_the_package_front_imports_only_core_eagerly():
    """`import parts2whole` stays light: the pipeline is reached through the lazy __getattr__ only."""
    tree = ast.parse((REPO_ROOT / "parts2whole" / "__init__.py").read_text())
    eager = [node for node in tree.body if isinstance(node, ast.ImportFrom) and node.level]
    assert eager and all((node.module or "").startswith("core") for node in eager)


def test_no_circles():
    graph = {module_name(path): {target for target, _ in imports_of(path)} - {module_name(path)} for path in source_files()}
    circles, state = [], {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                circles.append(" -> ".join(trail[trail.index(nxt):] + [nxt]) if nxt in trail else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not circles, "import circles:\n" + "\n".join(circles)


def _functions(tree: ast.AST):
    return [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


@pytest.mark.parametrize("path", source_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_modules_and_functions_stay_small(path):
    lines = path.read_text().splitlines()
    limit = MAX_APP_LINES if path.name == "app.py" and path.parent == REPO_ROOT else MAX_MODULE_LINES
    assert len(lines) <= limit, f"{len(lines)} lines (at most {limit})"
    long = [f"{node.name} (line {node.lineno}): {node.end_lineno - node.lineno + 1} lines"
            for node in _functions(ast.parse("\n".join(lines))) if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


@pytest.mark.parametrize("path", source_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_import_inside_a_function_says_why(path):
    """A deferred import hides a dependency: each carries a comment (on its line or just above) with the reason."""
    lines = path.read_text().splitlines()
    silent = []
    for function in _functions(ast.parse("\n".join(lines))):
        for node in ast.walk(function):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                here, above = lines[node.lineno - 1], lines[node.lineno - 2] if node.lineno > 1 else ""
                block_above = _comment_block_above(lines, function, node)
                if "#" not in here and "#" not in above and not block_above:
                    silent.append(f"line {node.lineno}: {here.strip()}")
    assert not silent, "imports inside functions without a reason comment:\n" + "\n".join(silent)


def _comment_block_above(lines: list[str], function: ast.AST, node: ast.AST) -> bool:
    """True when the import is one of a run of imports directly under a reason comment."""
    index = node.lineno - 2
    while index >= function.lineno and lines[index].strip().startswith(("import ", "from ")):
        index -= 1
    return index >= function.lineno - 1 and lines[index].strip().startswith("#")
