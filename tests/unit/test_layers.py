"""The layers of docs/architecture.md hold: a wrong import arrow fails here.

The order is read from pyproject's ``[tool.importlinter]`` layers contract (one source of
truth, the one ``lint-imports`` checks in CI); this test re-checks it with the standard
library, so it runs without import-linter too. Lazy imports inside functions count: they
are arrows as much as the ones at the top.
"""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "headwater"
# The package root re-exports the public API (it imports the SDK) and ``__main__`` runs
# the CLI: both sit above every layer.
OUTSIDE_THE_LAYERS = {"headwater", "headwater.__main__"}


def _layers() -> list[list[str]]:
    """The layers contract's layers, bottom first, each a list of its modules."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return [re.split(r"\s*[|:]\s*", layer.strip()) for layer in reversed(contract["layers"])]


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, imported module)`` for every ``headwater`` import in the file."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:  # ``from headwater import jsonsafe`` imports a module
                sub = f"{target}.{alias.name}"
                is_module = (SRC.parent / sub.replace(".", "/")).with_suffix(".py").exists()
                yield node.lineno, sub if is_module else target


def _owner(module: str, layers: list[list[str]]) -> tuple[int, str] | None:
    """The layer index and the layer member (package or module) that ``module`` is in."""
    for index, members in enumerate(layers):
        for member in members:
            if module == member or module.startswith(member + "."):
                return index, member
    return None


def _edges() -> Iterator[tuple[str, int, str]]:
    for path in sorted(SRC.rglob("*.py")):
        for line, target in _imports(path):
            if target == "headwater" or target.startswith("headwater."):
                yield _module_name(path), line, target


def test_every_module_is_in_a_layer() -> None:
    layers = _layers()
    unplaced = [
        m
        for m in sorted(_module_name(p) for p in SRC.rglob("*.py"))
        if m not in OUTSIDE_THE_LAYERS and _owner(m, layers) is None
    ]
    assert unplaced == [], "modules in no layer of pyproject's layers contract"


def test_no_import_goes_up_a_layer() -> None:
    layers = _layers()
    upward = []
    for source, line, target in _edges():
        if source in OUTSIDE_THE_LAYERS or target == "headwater":
            continue
        src, dst = _owner(source, layers), _owner(target, layers)
        assert src is not None and dst is not None, (source, target)
        if dst[0] > src[0]:
            upward.append(f"{source}:{line} imports {target} ({dst[1]} is above {src[1]})")
    assert upward == []


def test_no_cycle_between_packages() -> None:
    """The graph of the top-level packages (and root modules) has no cycle at all."""
    layers = _layers()
    graph: dict[str, set[str]] = {}
    for source, _, target in _edges():
        if source in OUTSIDE_THE_LAYERS or target == "headwater":
            continue
        src, dst = _owner(source, layers), _owner(target, layers)
        assert src is not None and dst is not None
        if src[1] != dst[1]:
            graph.setdefault(src[1], set()).add(dst[1])
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            pytest.fail("import cycle: " + " -> ".join([*path[path.index(node) :], node]))
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, [*path, node])
        done.add(node)

    for node in sorted(graph):
        visit(node, [])


def test_the_import_linter_contracts_are_kept() -> None:
    """What CI's ``lint-imports`` runs (import-linter is a dev dependency)."""
    cli = pytest.importorskip("importlinter.cli")
    code = cli.lint_imports(str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True)
    assert code == 0, "lint-imports: a contract is broken (its output is above)"


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])  # headwater.<package> (or a root module)


def _private_imports(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, what)`` for each private name (``_x``) imported from another package."""
    own = _package_of(_module_name(path))
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
            continue  # a relative import stays in its package
        if not node.module.startswith("headwater") or _package_of(node.module) == own:
            continue
        if any(_private(part) for part in node.module.split(".")):
            yield node.lineno, node.module
        yield from (
            (node.lineno, f"{node.module}.{a.name}") for a in node.names if _private(a.name)
        )


def test_no_module_imports_a_private_name_of_another_package() -> None:
    """A package's ``_name`` is its own business: another package that needs it asks for
    a public name (the composition root once imported ``run_cmds._EmbeddedServer``)."""
    found = [
        f"{_module_name(path)}:{line} imports {what}"
        for path in sorted(SRC.rglob("*.py"))
        for line, what in _private_imports(path)
    ]
    assert found == []


# What only the composition root's ``serve()`` may call: the HTTP app is built, the
# webhooks mounted and uvicorn configured in one place for ``up`` and ``server``.
SERVE_ONLY = {"create_app", "create_webhook_router", "uvicorn.Config", "uvicorn.run"}


def _serve_calls(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            if name in SERVE_ONLY:
                yield node.lineno, name


def test_one_composition_root_builds_the_http_server() -> None:
    found = [
        f"{_module_name(path)}:{line} calls {name}"
        for path in sorted(SRC.rglob("*.py"))
        if path != SRC / "app" / "serve.py"
        for line, name in _serve_calls(path)
    ]
    assert found == [], "the HTTP server is wired in headwater.app.serve.serve() only"
