"""Every built-in receiver has its own extra, named after it, and a missing client
library fails ``validate`` and the start with the exact ``pip install`` line, the trigger
``failed`` and not retried (checked for each receiver by hiding its client modules)."""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

import pytest

import headwater
from headwater.dispatch.dispatcher import Dispatcher
from headwater.errors import MissingClientError
from headwater.testing import InMemoryStore
from headwater.triggers.receivers import create_receiver
from headwater.triggers.receivers.manager import ReceiverManager
from headwater.workspace import check_workspace
from headwater.workspace.models import Workspace
from headwater.workspace.receiver_triggers import RECEIVERS
from headwater.workspace.templating import TemplateEngine

ROOT = Path(__file__).resolve().parents[2]
SRC = Path(headwater.__file__).resolve().parents[1]
EXTRAS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
WITH_CLIENT = sorted(k for k in RECEIVERS if RECEIVERS[k].client_modules)
# headwater's own dependencies a receiver may import without an extra.
CORE = {"headwater", "pydantic", "structlog", "httpx", "jinja2", "sqlalchemy", "yaml"}


def _install_line(kind: str) -> str:
    return f"pip install 'headwater[{RECEIVERS[kind].pip_extra}]'"


@pytest.mark.parametrize("kind", WITH_CLIENT)
def test_each_receiver_has_an_extra_named_after_it_in_brokers(kind: str) -> None:
    extra = kind.replace("_", "-")  # the convention: type sqlserver_cdc -> [sqlserver-cdc]
    assert RECEIVERS[kind].pip_extra == extra
    assert EXTRAS.get(extra), f"pyproject.toml has no extra {extra!r}"
    (brokers,) = EXTRAS["brokers"]
    assert extra in brokers.partition("[")[2].rstrip("]").split(",")


@pytest.mark.parametrize("kind", WITH_CLIENT)
def test_client_modules_name_every_library_the_runtime_imports(kind: str) -> None:
    """What ``validate`` checks is what the receiver imports: a library the runtime needs
    and ``client_modules`` leaves out would pass ``validate`` and fail at start."""
    roots = {m.split(".")[0] for m in RECEIVERS[kind].client_modules}
    imported = _third_party_imports(RECEIVERS.kind(kind).runtime)  # type: ignore[union-attr]
    assert imported <= roots | CORE, f"not in client_modules: {sorted(imported - roots - CORE)}"


def _hide_clients(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    for module in RECEIVERS[kind].client_modules:
        monkeypatch.setitem(sys.modules, module, None)  # `import module` raises ImportError
    for name in [m for m in sys.modules if m.startswith("headwater.triggers.receivers.")]:
        monkeypatch.delitem(sys.modules, name)


# Keys and values a receiver needs that "x" for each required field does not give.
_ONE_OF = {
    "postgres_cdc": {"tables": "x"},
    "mysql_cdc": {"tables": "shop.orders", "url": "mysql://db:3306"},
}


def _trigger(kind: str) -> dict[str, str]:
    model = RECEIVERS[kind]
    fields = {n: "x" for n, f in model.model_fields.items() if f.is_required()}
    return {**fields, **_ONE_OF.get(kind, {}), "type": kind, "target_task": "handle"}


@pytest.mark.parametrize("kind", WITH_CLIENT)
def test_a_missing_client_fails_validate_with_the_install_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kind: str
) -> None:
    _hide_clients(monkeypatch, kind)
    import yaml

    path = tmp_path / "ws.yaml"
    path.write_text(yaml.safe_dump(_workspace_dict(kind)))
    report = check_workspace(path, environ={})
    assert any(_install_line(kind) in p.message for p in report.errors), report.problems


@pytest.mark.parametrize("kind", WITH_CLIENT)
async def test_a_missing_client_fails_the_start_once_not_retried(
    monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    _hide_clients(monkeypatch, kind)
    trigger = Workspace.model_validate(_workspace_dict(kind)).triggers["incoming"]
    with pytest.raises(MissingClientError) as raised:
        create_receiver(trigger, lambda v, where: v, TemplateEngine())
    assert _install_line(kind) in str(raised.value)

    ws = Workspace.model_validate(_workspace_dict(kind))
    store = InMemoryStore()
    manager = ReceiverManager(
        store, Dispatcher(store, lambda: ws), lambda: ws, TemplateEngine(), dict
    )
    await manager.reconcile()
    await manager.reconcile()  # a second pass does not try again
    state = (await manager.states())["incoming"]
    assert (state["state"], state["restarts"]) == ("failed", 0)
    assert _install_line(kind) in state["last_error"]


def test_the_import_of_the_runtime_names_the_extra_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client module ``find_spec`` sees but that fails to import (a broken install)
    still ends in the install line, through the runtime's ImportError."""
    monkeypatch.setattr(RECEIVERS["kafka"], "client_modules", ())
    _hide_clients(monkeypatch, "kafka")
    monkeypatch.setitem(sys.modules, "aiokafka", None)
    trigger = Workspace.model_validate(_workspace_dict("kafka")).triggers["incoming"]
    with pytest.raises(MissingClientError, match=r"pip install 'headwater\[kafka\]'"):
        create_receiver(trigger, lambda v, where: v, TemplateEngine())


def _workspace_dict(kind: str) -> dict[str, object]:
    return {
        "name": "ws",
        "actions": {"noop": {"type": "script", "script": "true"}},
        "tasks": {"handle": {"flow": {"run": {"action": "noop"}}}},
        "triggers": {"incoming": _trigger(kind)},
    }


def _third_party_imports(runtime: str) -> set[str]:
    """Top-level names imported by the runtime package and the headwater receiver
    modules it imports (transitively), less the standard library."""
    seen: set[str] = set()
    found: set[str] = set()
    todo = [runtime]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        # Found by path, not imported: the test must not need the client libraries.
        base = SRC.joinpath(*name.split("."))
        files = sorted(base.glob("*.py")) if base.is_dir() else [base.with_suffix(".py")]
        for file in files:
            for node in ast.walk(ast.parse(file.read_text())):
                modules: list[str] = []
                if isinstance(node, ast.Import):
                    modules = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    modules = [node.module]
                for module in modules:
                    root = module.split(".")[0]
                    if module.startswith("headwater.triggers.receivers."):
                        todo.append(module)
                    elif root not in sys.stdlib_module_names and root != "__future__":
                        found.add(root)
    return found
