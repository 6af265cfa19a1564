"""Group commit: concurrent writers share transactions, and a failure stays its own."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from headwater.store.group_commit import GroupCommit


class _Db:
    def __init__(self) -> None:
        self.transactions: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def write(self, rows: Sequence[str]) -> list[str]:
        await self.gate.wait()
        if "bad" in rows:
            raise ValueError("constraint violated")
        self.transactions.append(list(rows))
        return [f"{row}!" for row in rows]


async def test_writers_arriving_during_a_commit_share_the_next_one() -> None:
    db = _Db()
    commits = GroupCommit(db.write)
    db.gate.clear()
    first = asyncio.create_task(commits.submit(["a"]))
    await asyncio.sleep(0)  # "a" is in its transaction; the next ones queue up
    others = [asyncio.create_task(commits.submit([f"r{i}", f"s{i}"])) for i in range(5)]
    await asyncio.sleep(0)
    db.gate.set()
    results = await asyncio.gather(first, *others)
    assert db.transactions == [["a"], [f"{x}{i}" for i in range(5) for x in "rs"]]
    # Each writer gets the results of its own rows.
    assert results == [["a!"], *([f"r{i}!", f"s{i}!"] for i in range(5))]


async def test_a_bad_row_fails_only_its_own_writer() -> None:
    db = _Db()
    commits = GroupCommit(db.write)
    db.gate.clear()
    blocker = asyncio.create_task(commits.submit(["x"]))
    await asyncio.sleep(0)
    good = asyncio.create_task(commits.submit(["good"]))
    bad = asyncio.create_task(commits.submit(["bad"]))
    await asyncio.sleep(0)
    db.gate.set()
    await blocker
    assert await good == ["good!"]
    with pytest.raises(ValueError, match="constraint"):
        await bad
    assert ["good"] in db.transactions


async def test_a_cancelled_writer_does_not_cancel_the_shared_commit() -> None:
    db = _Db()
    commits = GroupCommit(db.write)
    db.gate.clear()
    impatient = asyncio.create_task(commits.submit(["mine"]))
    patient = asyncio.create_task(commits.submit(["yours"]))
    await asyncio.sleep(0)
    impatient.cancel()
    db.gate.set()
    await patient
    assert db.transactions == [["mine", "yours"]] or db.transactions == [["mine"], ["yours"]]


async def test_batches_are_capped() -> None:
    db = _Db()
    commits = GroupCommit(db.write, max_batch=3)
    db.gate.clear()
    tasks = [asyncio.create_task(commits.submit([f"r{i}", f"s{i}"])) for i in range(4)]
    await asyncio.sleep(0)
    db.gate.set()
    await asyncio.gather(*tasks)
    assert all(len(t) <= 3 for t in db.transactions)
    assert sorted(r for t in db.transactions for r in t) == sorted(
        [f"r{i}" for i in range(4)] + [f"s{i}" for i in range(4)]
    )
