"""Every catalog line has its typed SDK decorator, exported, passing its first argument
to the field the model names (so a new line without its wrapper fails here)."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

import headwater
from headwater.sdk import decorators
from headwater.sdk.registry import Registry
from headwater.workspace.receiver_triggers import RECEIVERS


def _handler(payload: Any, metadata: Any) -> None:
    return None


BUILT_IN = sorted(k for k in RECEIVERS if k != "custom")
_VALID: dict[str, tuple[Any, Any, dict[str, Any]]] = {
    "mysql_cdc": ("shop.orders", ["shop.orders"], {"url": "mysql://cdc@db:3306"}),
    # A list field (postgres_cdc's tables) takes one name as a list of one.
    "postgres_cdc": ("the-arg", ["the-arg"], {}),
}


@pytest.mark.parametrize("kind", BUILT_IN)
def test_each_receiver_has_an_exported_typed_decorator(kind: str) -> None:
    model = RECEIVERS[kind]
    assert model.sdk_argument is not None and model.pip_extra is not None
    wrapper = getattr(Registry, f"on_{kind}")
    assert f"on_{kind}" in headwater.__all__
    assert getattr(decorators, f"on_{kind}") is getattr(headwater, f"on_{kind}")
    params = inspect.signature(wrapper).parameters
    fields = model.model_fields
    required: dict[str, Any] = {
        name: "x"
        for name, p in params.items()
        if p.kind is p.KEYWORD_ONLY
        and name != "name"
        # Connection keys may come from a class's receiver_defaults: optional in the
        # signature, still required by the model.
        and (p.default is p.empty or (name in fields and fields[name].is_required()))
    }
    # A model that checks its fields is given values it accepts.
    argument, stored, valid = _VALID.get(kind, ("the-arg", "the-arg", {}))
    registry = Registry(app="catalog")
    registry.__getattribute__(f"on_{kind}")(argument, name="n", **{**required, **valid})(_handler)
    (reg,) = registry.receivers
    assert getattr(reg.trigger, model.sdk_argument) == stored
    assert type(reg.trigger) is model
