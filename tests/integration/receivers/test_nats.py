"""What only the NATS receiver does: subject filters and JetStream metadata."""

from __future__ import annotations

import json

import pytest

from tests.integration.receivers.conftest import TRIGGER, Rig, eventually

pytestmark = pytest.mark.parametrize("harness", ["nats"], indirect=True)


async def test_a_subject_filter_takes_only_its_subjects(rig: Rig) -> None:
    stream = rig.trigger["stream"]
    rig.trigger["subject"] = f"{stream}.orders.*"
    await rig.start()
    js = rig.harness.js  # type: ignore[attr-defined]
    await js.publish(f"{stream}.orders.created", json.dumps({"n": 1}).encode())
    await js.publish(f"{stream}.users.created", json.dumps({"n": 2}).encode())
    await js.publish(
        f"{stream}.orders.paid", json.dumps({"n": 3}).encode(), headers={"tenant": "acme"}
    )
    jobs = await rig.wait_jobs(2)
    by_n = {j.input["payload"]["n"]: j.input["metadata"] for j in jobs}
    assert sorted(by_n) == [1, 3]
    assert by_n[3]["subject"] == f"{stream}.orders.paid"
    assert by_n[3]["headers"] == {"tenant": "acme"}
    assert (by_n[1]["stream"], by_n[1]["sequence"], by_n[1]["delivered"]) == (stream, 1, 1)


async def test_lag_reports_what_waits_in_the_stream(rig: Rig) -> None:
    rig.trigger["max_in_flight"] = 2
    manager = await rig.start()
    await rig.harness.publish([{"n": i} for i in range(7)])
    await rig.wait_jobs(2)

    async def five_waiting() -> bool:
        state = (await manager.states())[TRIGGER]
        return bool(state["lag_events"] == 5 and state["lag_pending"] == 0)

    await eventually(five_waiting, what="lag of 5")
