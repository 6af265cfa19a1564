"""Strøm's task state on SQLite and PostgreSQL: when a snapshot is kept, what it holds."""

from __future__ import annotations

from pathlib import Path

from headwater.engine import task_state
from headwater.store.base import JobStatus
from tests.integration.test_engine import start_node

SECRET = "s3cr3t-value-for-state"


async def test_state_is_kept_after_the_process_ended_and_read_by_the_next_run(
    tmp_path: Path, db_url: str
) -> None:
    node = await start_node(
        tmp_path,
        db_url,
        f"""
        secrets:
          token: "{SECRET}"
        actions:
          remember:
            type: script
            script: |
              echo "seen before: {{{{ state.count | default(value=0) }}}}"
              n=$(( {{{{ state.count | default(value=0) }}}} + 1 ))
              cat "$STATE_DIR/note.txt" 2>/dev/null || true
              echo "run $n" > "$STATE_OUT_DIR/note.txt"
              echo "STATE: {{\\"count\\": $n, \\"token\\": \\"{{{{ secret.token }}}}\\"}}"
              echo "STATE: {{\\"last\\": \\"run $n\\"}}"
              note=$(cat $STATE_DIR/note.txt 2>/dev/null)
              echo "OUTPUT: {{\\"count\\": $n, \\"note\\": \\"$note\\"}}"
              [ "$n" -ne 2 ] || exit 4
          slow:
            type: script
            timeout: 1
            script: |
              echo 'STATE: {{"count": 100}}'
              sleep 30
        tasks:
          count:
            flow:
              remember: {{ action: remember }}
          hang:
            flow:
              slow: {{ action: slow }}
        """,
    )
    try:
        first = await node.run_one("count", {})
        assert first.output == {"remember": {"count": 1, "note": ""}}
        # exit 4: the step fails, but its process ran to its end, so its state is kept
        second = await node.run_one("count", {})
        assert second.status is JobStatus.FAILED
        third = await node.run_one("count", {})
        assert third.output == {"remember": {"count": 3, "note": "run 2"}}

        kept = await node.store.get_task_state(node.workspace().name, "count")
        assert kept is not None
        assert kept.job_id == third.id and kept.step == "remember"
        # the lines merged; the secret masked as in outputs
        assert kept.state == {"count": 3, "token": "••••••", "last": "run 3"}
        assert task_state.file_names(kept) == ["note.txt"]

        # a timed-out step keeps nothing
        timed_out = await node.run_one("hang", {})
        assert timed_out.status is JobStatus.FAILED
        assert await node.store.get_task_state(node.workspace().name, "hang") is None
    finally:
        await node.close()


async def test_global_state_is_shared_and_a_task_reads_only_its_own(
    tmp_path: Path, db_url: str
) -> None:
    node = await start_node(
        tmp_path,
        db_url,
        """
        actions:
          write:
            type: script
            script: |
              echo 'GLOBAL_STATE: {"token": "abc"}'
              echo 'STATE: {"mine": "writer"}'
              echo shared > "$GLOBAL_STATE_OUT_DIR/shared.txt"
          read:
            type: script
            script: |
              file=$(cat $GLOBAL_STATE_DIR/shared.txt)
              token='{{ global_state.token }}'; mine='{{ state | json_encode() }}'
              echo "OUTPUT: {\\"token\\": \\"$token\\", \\"file\\": \\"$file\\", \\"mine\\": $mine}"
        tasks:
          writer:
            flow:
              write: { action: write }
          reader:
            flow:
              read: { action: read }
        """,
    )
    try:
        await node.run_one("writer", {})
        job = await node.run_one("reader", {})
        assert job.output == {"read": {"token": "abc", "file": "shared", "mine": None}}
    finally:
        await node.close()


async def test_oversized_state_is_not_kept_and_the_step_says_so(
    tmp_path: Path, db_url: str, monkeypatch: object
) -> None:
    import pytest

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    monkeypatch.setattr(task_state, "MAX_STATE_FILES_BYTES", 1000)
    node = await start_node(
        tmp_path,
        db_url,
        """
        actions:
          big:
            type: script
            script: |
              head -c 100000 /dev/urandom > "$STATE_OUT_DIR/blob"
              echo 'STATE: {"ok": true}'
        tasks:
          big:
            flow:
              big: { action: big }
        """,
    )
    try:
        job = await node.run_one("big", {})
        assert job.status is JobStatus.COMPLETED  # a warning, as in Strøm, not a failure
        assert await node.store.get_task_state(node.workspace().name, "big") is None
        logs = [rec.line for rec in await node.store.get_logs(job.id)]
        assert any("task state was not kept" in line and "limit" in line for line in logs)
    finally:
        await node.close()


async def test_state_no_store_can_keep_is_a_warning_not_a_crash(
    tmp_path: Path, db_url: str
) -> None:
    node = await start_node(
        tmp_path,
        db_url,
        """
        actions:
          nul:
            type: script
            script: |
              echo 'STATE: {"text": "a\\u0000b"}'
        tasks:
          nul:
            flow:
              nul: { action: nul }
        """,
    )
    try:
        job = await node.run_one("nul", {})
        assert job.status is JobStatus.COMPLETED, job.steps
        logs = [rec.line for rec in await node.store.get_logs(job.id)]
        kept = await node.store.get_task_state(node.workspace().name, "nul")
        # SQLite keeps the character; PostgreSQL's JSON cannot, and the step says so
        assert kept is not None or any("task state was not kept" in line for line in logs)
    finally:
        await node.close()
