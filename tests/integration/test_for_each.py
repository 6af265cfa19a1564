"""Strøm's for_each: fan-out over a rendered list, `sequential` / `max_parallel`, fan-in."""

from __future__ import annotations

from pathlib import Path

from headwater.store.base import JobStatus, StepStatus
from tests.integration.test_engine import start_node

WORKSPACE = """
actions:
  get-items:
    type: script
    script: 'echo "OUTPUT: {\\"items\\": [\\"a\\", \\"b\\", \\"c\\"]}"'
  process-item:
    type: script
    script: |
      echo "OUTPUT: {\\"result\\": \\"done-{{ input.item }}\\", \\"at\\": {{ input.index }}}"
  maybe-fail:
    type: script
    script: |
      echo "{{ each.index }}" >> "{{ input.log }}"
      test "{{ each.item }}" != "bad" || exit 3
      echo "OUTPUT: {\\"item\\": \\"{{ each.item }}\\"}"
  count-running:
    type: script
    script: |
      dir="{{ input.dir }}"; mkdir -p "$dir"
      touch "$dir/{{ each.index }}"
      ls "$dir" | wc -l >> "{{ input.dir }}.peaks"
      sleep 0.2
      rm "$dir/{{ each.index }}"
  combine:
    type: script
    script: |
      echo 'OUTPUT: {"seen": {{ input.results | json_encode() }}}'
tasks:
  fan:
    flow:
      fetch:
        action: get-items
      process:
        action: process-item
        depends_on: [fetch]
        for_each: "{{ fetch.output.items }}"
        input:
          item: "{{ each.item }}"
          index: "{{ each.index }}"
      aggregate:
        action: combine
        depends_on: [process]
        input:
          results: "{{ process.output }}"
  loop:
    input:
      items: { type: array }
      log: { type: string }
    flow:
      each-one:
        action: maybe-fail
        for_each: "{{ input.items }}"
        sequential: true
        input: { log: "{{ input.log }}" }
  loop-parallel:
    input:
      items: { type: array }
      log: { type: string }
    flow:
      each-one:
        action: maybe-fail
        for_each: "{{ input.items }}"
        input: { log: "{{ input.log }}" }
      after:
        action: get-items
        depends_on: [each-one]
  loop-tolerant:
    input:
      log: { type: string }
    flow:
      each-one:
        action: maybe-fail
        for_each: ["ok", "bad"]
        continue_on_failure: true
        input: { log: "{{ input.log }}" }
  limited:
    input:
      dir: { type: string }
    flow:
      run:
        action: count-running
        for_each: [1, 2, 3, 4, 5, 6]
        max_parallel: 2
        input: { dir: "{{ input.dir }}" }
  odd-lists:
    input:
      value: { type: object }
      go: { type: boolean, default: true }
    flow:
      run:
        action: get-items
        when: "{{ input.go }}"
        for_each: "{{ input.value.list }}"
"""


async def test_fan_out_then_fan_in(tmp_path: Path, db_url: str) -> None:
    node = await start_node(tmp_path, db_url, WORKSPACE)
    try:
        job = await node.run_one("fan", {})
        assert job.status is JobStatus.COMPLETED, job.error
        outputs = [
            {"result": "done-a", "at": 0},
            {"result": "done-b", "at": 1},
            {"result": "done-c", "at": 2},
        ]
        steps = {s.name: s for s in job.steps}
        assert steps["process"].output == outputs
        assert [steps[f"process[{i}]"].output for i in range(3)] == outputs
        assert steps["aggregate"].output == {"seen": outputs}
        assert job.output is not None and job.output["process"] == outputs
    finally:
        await node.close()


async def test_a_sequential_loop_stops_at_its_first_failure(tmp_path: Path, db_url: str) -> None:
    node = await start_node(tmp_path, db_url, WORKSPACE)
    log = tmp_path / "order.log"
    try:
        job = await node.run_one("loop", {"items": ["x", "bad", "z"], "log": str(log)})
        assert job.status is JobStatus.FAILED
        steps = {s.name: s for s in job.steps}
        assert log.read_text() == "0\n1\n"  # in order, and never the third
        assert steps["each-one[2]"].status is StepStatus.SKIPPED
        assert steps["each-one"].status is StepStatus.FAILED
        assert "each-one[1]" in (steps["each-one"].error or "")
        assert steps["each-one"].output == [{"item": "x"}, None, None]
    finally:
        await node.close()


async def test_parallel_instances_all_run_and_the_step_fails_after(
    tmp_path: Path, db_url: str
) -> None:
    node = await start_node(tmp_path, db_url, WORKSPACE)
    log = tmp_path / "parallel.log"
    try:
        job = await node.run_one("loop-parallel", {"items": ["bad", "y", "z"], "log": str(log)})
        assert job.status is JobStatus.FAILED
        assert sorted(log.read_text().split()) == ["0", "1", "2"]
        steps = {s.name: s for s in job.steps}
        assert steps["each-one"].output == [None, {"item": "y"}, {"item": "z"}]
        assert steps["after"].status is StepStatus.SKIPPED

        job = await node.run_one("loop-tolerant", {"log": str(log)})
        assert job.status is JobStatus.COMPLETED, job.error
        steps = {s.name: s for s in job.steps}
        assert steps["each-one"].status is StepStatus.COMPLETED
        assert steps["each-one"].output == [{"item": "ok"}, None]
        assert steps["each-one[1]"].status is StepStatus.FAILED
    finally:
        await node.close()


async def test_max_parallel_bounds_the_instances_running_at_once(
    tmp_path: Path, db_url: str
) -> None:
    node = await start_node(tmp_path, db_url, WORKSPACE)
    running = tmp_path / "running"
    try:
        job = await node.run_one("limited", {"dir": str(running)})
        assert job.status is JobStatus.COMPLETED, job.error
        peaks = [int(n) for n in (tmp_path / "running.peaks").read_text().split()]
        assert len(peaks) == 6 and max(peaks) <= 2
    finally:
        await node.close()


async def test_empty_not_a_list_and_when(tmp_path: Path, db_url: str) -> None:
    node = await start_node(tmp_path, db_url, WORKSPACE)
    try:
        job = await node.run_one("odd-lists", {"value": {"list": []}})
        assert job.status is JobStatus.COMPLETED, job.error
        (step,) = job.steps
        assert step.status is StepStatus.SKIPPED and "empty" in (step.error or "")

        job = await node.run_one("odd-lists", {"value": {"list": "abc"}})
        assert job.status is JobStatus.FAILED
        (step,) = job.steps
        assert "for_each must give a list" in (step.error or "")

        job = await node.run_one("odd-lists", {"value": {"list": [1, 2]}, "go": False})
        assert job.status is JobStatus.COMPLETED
        assert [(s.name, s.status) for s in job.steps] == [("run", StepStatus.SKIPPED)]
    finally:
        await node.close()
