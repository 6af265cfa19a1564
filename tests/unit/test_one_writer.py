"""One writer of jobs and rejected events: the Dispatcher (``headwater.dispatch``).

Every job (an API call, ``headwater run``, a replayed dead letter, a trigger's event) and
every rejected event (a refused event, a dead-lettered broker message, a cron tick that
does not render) is written by ``dispatch/``, which alone calls the store's writers; the
store implements them. The source is read with ``ast``: a new caller anywhere else fails
here, lazy imports and all.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "headwater"
# The store's writers of the jobs and rejected_events tables.
WRITERS = {"insert_jobs", "insert_job_with_steps", "insert_rejected"}
TABLES = {"jobs", "rejected_events"}
ALLOWED = {"dispatch", "store"}
# The SDK's exactly-once consumer records its dead letter (and a replay marks it) in
# the consumer's own transaction, with its fence: SQL that moves into store functions
# taking the caller's connection (issue 16, "the store owns all SQL"), not through the
# dispatcher (the consumer process has none).
TABLE_WRITES_PENDING = {"sdk/consumers/sql.py", "sdk/dead_letters.py"}


def _package(path: Path) -> str:
    return path.relative_to(SRC).parts[0].removesuffix(".py")


def _writer_calls(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in WRITERS
        ):
            yield node.lineno, node.func.attr


def _table_writes(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """``insert(jobs)``, ``update(rejected_events)``, ``insert_for(d)(jobs)``…"""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or len(node.args) != 1:
            continue
        (arg,) = node.args
        if not (isinstance(arg, ast.Name) and arg.id in TABLES):
            continue
        func = node.func
        while isinstance(func, ast.Call):  # a statement factory: insert_for(dialect)(t)
            func = func.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if "insert" in name or name in {"update", "delete"}:
            yield node.lineno, f"{name}({arg.id})"


def _offenders(pending: set[str]) -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if _package(path) in ALLOWED:
            continue
        tree = ast.parse(path.read_text(), str(path))
        where = path.relative_to(SRC).as_posix()
        found += [f"{where}:{line} calls {name}" for line, name in _writer_calls(tree)]
        if where not in pending:
            found += [f"{where}:{line} writes {what}" for line, what in _table_writes(tree)]
    return found


def test_only_the_dispatcher_writes_jobs_and_rejected_events() -> None:
    offenders = _offenders(TABLE_WRITES_PENDING)
    assert not offenders, (
        "jobs and rejected events are written through the Dispatcher "
        "(Dispatcher.dispatch / submit / reject):\n" + "\n".join(offenders)
    )


def test_the_scan_sees_a_writer(tmp_path: Path) -> None:
    code = (
        "async def f(store, t):\n"
        "    await store.insert_jobs([])\n"
        "    await store.x.insert_rejected([])\n"
        "    insert_for('sqlite')(rejected_events)\n"
        "    update(jobs)\n"
        "    select(jobs)\n"
    )
    tree = ast.parse(code)
    assert [n for _, n in _writer_calls(tree)] == ["insert_jobs", "insert_rejected"]
    assert sorted(w for _, w in _table_writes(tree)) == [
        "insert_for(rejected_events)",
        "update(jobs)",
    ]
