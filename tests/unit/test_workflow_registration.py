"""``@headwater.workflow`` registers a task whose one function step runs the workflow,
with the task's flow control; steps outside a workflow are plain calls."""

from __future__ import annotations

from typing import Any

import pytest

import headwater
from headwater.errors import RegistrationError
from headwater.sdk.registrations import function_ref
from headwater.workspace.models import ActionType


def test_a_workflow_is_a_task_with_its_flow_control() -> None:
    registry = headwater.Registry(app="shop")

    @headwater.workflow(
        registry=registry, name="checkout", concurrency={"key": "{{ input.user }}", "limit": 1}
    )
    def checkout(user: str, cents: int = 0) -> dict[str, Any]:
        return {"user": user}

    (registration,) = registry.workflows
    assert registration.describe()["kind"] == "workflow"
    task = registry.workspace().tasks["checkout"]
    assert task.concurrency is not None and task.concurrency.limit == 1
    (step,) = task.flow.values()
    assert step.inline is not None and step.inline.type is ActionType.FUNCTION
    assert step.inline.function == function_ref(checkout)
    assert registry.functions()[function_ref(checkout)] is checkout


def test_workflow_arguments_are_bound_by_name_and_star_args_are_refused() -> None:
    registry = headwater.Registry(app="shop")

    @headwater.workflow(registry=registry)
    def pay(order: int, cents: int = 5) -> None: ...

    definition = pay.__headwater_workflow__  # type: ignore[attr-defined]
    assert definition.name == "pay"
    assert definition.bind((7,), {}) == {"order": 7}
    with pytest.raises(TypeError, match="workflow 'pay'"):
        definition.bind((), {"nope": 1})
    with pytest.raises(RegistrationError, match=r"\*args"):

        @headwater.workflow(registry=registry)
        def many(*orders: int) -> None: ...


def test_steps_outside_a_workflow_are_plain_calls() -> None:
    calls: list[int] = []

    @headwater.step(retries=2)
    def add(a: int, b: int) -> int:
        calls.append(a)
        return a + b

    @headwater.transaction
    def write(session: Any, n: int) -> tuple[Any, int]:
        return session, n

    assert add(1, 2) == 3 and calls == [1]
    assert write("my-session", 4) == ("my-session", 4)
    with pytest.raises(headwater.WorkflowError, match="inside a workflow"):
        headwater.recv("topic")
    with pytest.raises(RegistrationError):
        headwater.step(retries=-1)
