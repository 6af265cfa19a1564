"""Finding an application's registrations: ``MODULE`` or ``path/to/app.py``, with an
optional ``:attribute`` naming a ``Registry`` (like uvicorn's ``module:app``)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

from headwater.errors import RegistrationError
from headwater.sdk.class_defaults import check_unclaimed
from headwater.sdk.registry import Registry, default_registry

__all__ = ["app_root", "import_app", "load_registry", "split_spec"]


def import_app(module: str) -> ModuleType:
    """Import ``package.module`` or the file ``path/to/app.py`` (as module ``app``, with its
    folder on ``sys.path``, so ``app:function`` refs resolve in every process)."""
    if module.endswith(".py") or "/" in module:
        path = Path(module).resolve()
        if not path.is_file():
            raise RegistrationError(f"no such Python file: {module}")
        folder = str(path.parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        module = path.stem
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name == module:
            raise RegistrationError(
                f"cannot import {module!r}: no such module (is it on PYTHONPATH?"
                " A file path works too: path/to/app.py)"
            ) from None
        raise


def _complete(module: ModuleType, registry: Registry) -> Registry:
    """The registry, after checking no receiver-bound method of the module was left
    incomplete (a missing field that no class default gave)."""
    names = {r.name for r in registry}
    check_unclaimed(module, names.__contains__)
    return registry


def split_spec(spec: str) -> tuple[str, str]:
    """``"pkg.mod:registry"`` → ("pkg.mod", "registry"); no attribute → (spec, "")."""
    head, sep, tail = spec.rpartition(":")
    if sep and head and tail.isidentifier():
        return head, tail
    return spec, ""


def app_root(spec: str) -> Path:
    """Where the application lives: the file's folder, else the working directory."""
    module, _ = split_spec(spec)
    return Path(module).resolve().parent if module.endswith(".py") else Path.cwd()


def load_registry(spec: str) -> Registry:
    """The registry ``spec`` names: ``module:attr``, else the default registry the
    module's decorators wrote to, else the one ``Registry`` the module defines."""
    module_spec, attr = split_spec(spec)
    loaded = import_app(module_spec)
    if attr:
        found = getattr(loaded, attr, None)
        if not isinstance(found, Registry):
            raise RegistrationError(f"{spec!r}: {attr!r} is not a headwater.Registry")
        return _complete(loaded, found)
    registry = default_registry()
    if len(registry):
        return _complete(loaded, registry)
    own = [v for v in vars(loaded).values() if isinstance(v, Registry)]
    if len(own) == 1:
        return _complete(loaded, own[0])
    if own:
        raise RegistrationError(
            f"{spec!r} defines {len(own)} registries; name one: {spec}:<attribute>"
        )
    check_unclaimed(loaded, lambda _name: False)
    raise RegistrationError(
        f"{spec!r} registers nothing: decorate functions with @headwater.consumer(...) or"
        " @headwater.on_<broker>(...)"
    )
