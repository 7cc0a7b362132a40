"""Layers import downward only, and no module imports itself back: checked on the import
statements of agentic/ as written (the AST: module level, function level and type-only ones),
so a new file is covered the day it appears. ARCHITECTURE.md describes the layers."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "agentic"

# Which layer each part of the package is in, by the longest matching module prefix; everything
# else directly under agentic/ (config, logs, errors, ids) is the neutral core.
LAYER_OF = {
    "agentic": "core",
    "agentic.engine": "engine",
    "agentic.sessions": "sessions",
    "agentic.web": "web",
    "agentic.uploads": "uploads",
    "agentic.chat": "chat",
    "agentic.api": "api",
    "agentic.keys": "api",  # the app's typed keys: what the views read request.app through
    "agentic.app": "app",
    "agentic.proxy": "proxy",
    "agentic.cli": "cli",
    "agentic.__main__": "cli",
}

# The layers each layer may import, beside its own.
MAY_IMPORT = {
    "core": set(),
    "engine": {"core"},
    "sessions": {"core"},
    "web": {"core"},
    "uploads": {"core", "sessions"},
    "chat": {"core", "engine", "sessions", "uploads"},
    "api": {"core", "web", "engine", "sessions", "uploads", "chat"},
    "app": {"core", "web", "engine", "sessions", "uploads", "chat", "api"},
    "proxy": {"core", "web"},
    "cli": {"core", "app", "proxy", "sessions"},  # sessions: `store copy`
}

# Libraries a layer must not import: the domain stays free of the web framework, and what the
# client proxy and the shared web module load stays free of the model and the metrics.
WEB_FRAMEWORK = {"aiohttp", "aiohttp_jinja2", "aiohttp_session"}
HEAVY = {"llama_cpp", "prometheus_client"}
MAY_NOT_USE = {
    "core": WEB_FRAMEWORK | HEAVY,
    "engine": WEB_FRAMEWORK,
    "sessions": WEB_FRAMEWORK | HEAVY,
    "uploads": WEB_FRAMEWORK | HEAVY,
    "chat": WEB_FRAMEWORK | HEAVY,
    "web": HEAVY,
    "proxy": HEAVY,
    "api": {"llama_cpp"},
    "app": {"llama_cpp"},
}


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module (an agentic module, or a library's top-level name)
    line: int


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path) -> dict[str, Path]:
    return {module_name(path, root): path for path in sorted(root.rglob("*.py"))}


def imports_of(source: str, path: Path, known: set[str]) -> list[Import]:
    """Every import in the file, wherever it is; `from a import b` names the module a.b when it is one."""
    package = source if path.name == "__init__.py" else source.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [Import(source, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append(Import(source, sub if sub in known else base, node.lineno))
    return found


def layer_of(module: str) -> str:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        layer = LAYER_OF.get(".".join(parts[:n]))
        if layer is not None:
            return layer
    raise AssertionError(f"{module} is in no layer")


def violations(graph: dict[str, list[Import]]) -> list[str]:
    found: list[str] = []
    for source, edges in graph.items():
        layer = layer_of(source)
        for edge in edges:
            top = edge.target.split(".")[0]
            if top == "agentic":
                target = layer_of(edge.target)
                if target != layer and target not in MAY_IMPORT[layer]:
                    found.append(f"{source}:{edge.line} ({layer}) imports {edge.target} ({target})")
            elif top in MAY_NOT_USE.get(layer, ()):
                found.append(f"{source}:{edge.line} ({layer}) imports {edge.target}")
    return list(dict.fromkeys(found))  # `from aiohttp import a, b` is one finding


def cycles(graph: dict[str, list[Import]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for edge in graph.get(node, ()):
            nxt = edge.target
            if nxt not in graph:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def import_graph(root: Path) -> dict[str, list[Import]]:
    found = modules(root)
    known = set(found)
    return {name: [i for i in imports_of(name, path, known) if i.target != name] for name, path in found.items()}


def test_every_module_is_in_a_layer():
    for name in modules(PACKAGE_DIR):
        assert layer_of(name) in MAY_IMPORT


def test_layers_import_downward_only():
    assert violations(import_graph(PACKAGE_DIR)) == []


def test_no_import_cycles():
    assert cycles(import_graph(PACKAGE_DIR)) == []


# -- the checker itself -----------------------------------------------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "agentic"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize("text", [
    "from agentic.api.errors import ApiError\n",
    "def f():\n    import agentic.api.errors\n",
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from agentic.api import errors\n",
    "from aiohttp import web\n",
])
def test_checker_finds_an_upward_import_wherever_it_is(tmp_path, text):
    root = _package(tmp_path, {"__init__.py": "", "sessions/__init__.py": "", "sessions/ids.py": text,
                               "api/__init__.py": "", "api/errors.py": ""})
    assert [v.split(" (")[0] for v in violations(import_graph(root))] == [f"agentic.sessions.ids:{text.count(chr(10))}"]


def test_checker_finds_a_cycle_through_relative_imports(tmp_path):
    root = _package(tmp_path, {"__init__.py": "", "chat/__init__.py": "", "chat/a.py": "from . import b\n",
                               "chat/b.py": "from .c import x\n", "chat/c.py": "from agentic.chat.a import y\n"})
    assert violations(import_graph(root)) == []
    assert cycles(import_graph(root)) == [["agentic.chat.a", "agentic.chat.b", "agentic.chat.c"]]
