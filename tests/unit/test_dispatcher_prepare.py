"""The event-source fast path of the Dispatcher (``prepare_keyed``) makes exactly the jobs
and rejections that the general path (``prepare_batch`` of ``Event``s) makes."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.dispatch.dispatcher import Dispatcher, Event, PreparedBatch
from headwater.workspace import load_workspace
from headwater.workspace.models import Workspace

WORKSPACE = """
actions:
  noop:
    type: script
    script: "true"
tasks:
  target:
    input:
      n: { type: integer, required: true }
      kind: { type: string, default: plain, options: [plain, fancy] }
    flow:
      s: { action: noop }
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    path = Path(tmp_path_factory.mktemp("ws")) / "ws.yaml"
    path.write_text(textwrap.dedent(WORKSPACE))
    return load_workspace(path)


def summary(batch: PreparedBatch) -> tuple[Any, ...]:
    return (
        [
            (j.task, dict(j.input), j.source_type, j.source_id, j.dedup_key, j.tags)
            for j in batch.jobs
        ],
        batch.job_slots,
        [(r.payload, r.reason, r.dedup_key, r.source_id) for r in batch.rejected],
        batch.outcomes,
    )


_PAYLOADS = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "n": st.one_of(st.integers(-3, 3), st.text(max_size=2), st.none()),
            "kind": st.sampled_from(["plain", "fancy", "odd"]),
            "extra": st.integers(),
        },
    ),
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(payloads=_PAYLOADS, defaults=st.sampled_from([{}, {"kind": "fancy"}, {"n": 1}]))
def test_prepare_keyed_is_prepare_batch(
    workspace: Workspace, payloads: list[dict[str, Any]], defaults: dict[str, Any]
) -> None:
    dispatcher = Dispatcher(None, lambda: workspace)  # type: ignore[arg-type]  # no I/O here
    keyed = [(f"k{i}", p) for i, p in enumerate(payloads)]
    for task in ("target", "missing"):
        fast = dispatcher.prepare_keyed(task, "event_source", "ws/t", defaults, keyed)
        general = dispatcher.prepare_batch(
            [Event(task, p, "event_source", "ws/t", key, defaults) for key, p in keyed]
        )
        assert summary(fast) == summary(general)
