"""Flow control as declared: `validate` reports bad keys at their file:line, the
dispatcher renders keys and priorities onto the job (trigger priority wins), and the SDK's
receiver decorators take a handler task's `concurrency`/`rate_limit`."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from headwater.dispatch.dispatcher import Dispatcher, DispatchStatus, Event
from headwater.errors import RegistrationError
from headwater.sdk.registry import Registry
from headwater.store.base import ConcurrencyStrategy, JobFlow
from headwater.testing import InMemoryStore
from headwater.workspace import load_workspace
from tests.unit.test_workspace_validate import check, problems

WORKSPACE = """\
actions:
  noop:
    type: script
    script: "true"
tasks:
  sync:
    input:
      customer_id: { type: string, required: true }
      urgent: { type: boolean, default: false }
    concurrency: { key: "{{ input.customer_id }}", limit: 2, strategy: skip_new }
    rate_limit: { key: "{{ input.customer_id }}", limit: 100, per: 1m }
    priority: "{{ 10 if input.urgent else 1 }}"
    flow:
      s: { action: noop }
  plain:
    concurrency: { limit: 3 }
    flow:
      s: { action: noop }
triggers:
  hook:
    type: webhook
    task: sync
    priority: 50
"""


def test_valid_flow_keys(tmp_path: Path) -> None:
    report = check(tmp_path, "", base=WORKSPACE)
    assert report.valid, [p.format() for p in report.problems]


def test_bad_flow_keys_are_reported_at_their_line(tmp_path: Path) -> None:
    report = check(
        tmp_path,
        """
        tasks:
          bad:
            concurrency: { key: "{{ input.c", limit: 0, strategy: drop }
            flow:
              s: { action: noop }
          worse:
            rate_limit: { key: "{{ payload.x }}", limit: 5, per: soon }
            priority: high
            flow:
              s: { action: noop }
          templated:
            concurrency: { key: "{{ input.c" }
            rate_limit: { key: "{{ secret.x }}", limit: 5, per: 1s }
            flow:
              s: { action: noop }
        """,
        base="actions:\n  noop:\n    type: script\n    script: 'true'\n",
    )
    found = problems(report)
    text = "\n".join(f"{line}: {message}" for line, message in found)
    assert any(line == 7 and "concurrency.limit" in m for line, m in found), text
    assert any(line == 7 and "strategy 'drop'" in m for line, m in found), text
    assert any(line == 11 and "rate_limit.per" in m and "soon" in m for line, m in found), text
    assert any(line == 12 and "priority 'high'" in m for line, m in found), text
    assert any(line == 16 and "not a valid template" in m for line, m in found), text
    assert any(line == 17 and "reads `secret`" in m for line, m in found), text


@pytest.fixture
def workspace(tmp_path: Path) -> Any:
    path = tmp_path / "ws.yaml"
    path.write_text(textwrap.dedent(WORKSPACE))
    return load_workspace(path)


async def test_dispatch_renders_keys_and_priority(workspace: Any) -> None:
    store = InMemoryStore()
    dispatcher = Dispatcher(store, lambda: workspace)
    events = [
        Event("sync", {"customer_id": "acme"}, "api"),
        Event("sync", {"customer_id": "acme", "urgent": True}, "api"),
        Event("sync", {"customer_id": "zen"}, "webhook", source_id=f"{workspace.name}/hook"),
        Event("plain", {}, "api"),
    ]
    outcomes = await dispatcher.dispatch(events)
    flows = [store.flows[o.job_id or ""] for o in outcomes]
    scope = f"{workspace.name}/sync"
    assert flows[0] == (
        1,
        JobFlow(f"{scope}:acme", 2, ConcurrencyStrategy.SKIP_NEW, f"{scope}:acme", 100, 60.0),
    )
    assert flows[1][0] == 10
    assert flows[2][0] == 50  # the trigger's priority wins over the task's
    assert flows[2][1].concurrency_key == f"{scope}:zen"
    assert flows[3] == (0, JobFlow(f"{workspace.name}/plain", 3))  # a global limit


async def test_a_key_that_does_not_render_rejects_the_event(workspace: Any) -> None:
    ws = workspace.model_copy(
        update={
            "tasks": {
                **workspace.tasks,
                "sync": workspace.tasks["sync"].model_copy(update={"priority": "{{ input.nope }}"}),
            }
        }
    )
    store = InMemoryStore()
    [outcome] = await Dispatcher(store, lambda: ws).dispatch(
        [Event("sync", {"customer_id": "acme"}, "api")]
    )
    assert outcome.status is DispatchStatus.REJECTED
    assert outcome.reason is not None and "nope" in outcome.reason
    assert store.jobs == {}


def test_sdk_receiver_takes_the_task_flow_keys() -> None:
    registry = Registry(app="app")

    @registry.on_amqp(
        "orders",
        name="orders",
        url="amqp://localhost",
        concurrency={"key": "{{ input.payload.customer }}", "limit": 1},
        rate_limit={"limit": 10, "per": "1s"},
        priority=7,
    )
    def handle(payload: Any) -> None:
        return None

    ws = registry.workspace()
    task = ws.tasks["orders"]
    assert task.concurrency is not None and task.concurrency.limit == 1
    assert task.rate_limit is not None and task.rate_limit.per == 1.0
    assert ws.triggers["orders"].priority == 7
    with pytest.raises(RegistrationError, match="limit"):
        registry.on_amqp("x", name="x", url="amqp://h", concurrency={"limit": 0})
