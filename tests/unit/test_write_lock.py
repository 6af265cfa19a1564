"""The SQLite write lock: job writes go before waiting ingest writes, but an ingest write
is never held back longer than ``max_defer``; one holder at a time; a cancelled waiter
never takes (or keeps) the lock."""

from __future__ import annotations

import asyncio

from headwater.store.write_lock import WriteLock


async def _hold(lock: WriteLock, order: list[str], name: str, ingest: bool = False) -> None:
    if ingest:
        async with lock.ingest():
            order.append(name)
            await asyncio.sleep(0)
    else:
        async with lock:
            order.append(name)
            await asyncio.sleep(0)


async def test_waiting_job_writes_go_before_a_waiting_ingest_write() -> None:
    lock = WriteLock(max_defer=10.0)
    order: list[str] = []
    async with lock.ingest():
        tasks = [asyncio.create_task(_hold(lock, order, "ingest-2", ingest=True))]
        await asyncio.sleep(0)
        tasks += [asyncio.create_task(_hold(lock, order, f"job-{i}")) for i in range(3)]
        await asyncio.sleep(0)
        assert order == []  # held: nobody else got in
    await asyncio.gather(*tasks)
    assert order == ["job-0", "job-1", "job-2", "ingest-2"]
    assert not lock.locked()


async def test_an_ingest_write_waits_at_most_max_defer() -> None:
    lock = WriteLock(max_defer=0.05)
    order: list[str] = []
    stop = asyncio.Event()

    async def job_writes() -> None:  # a job write always waiting
        i = 0
        while not stop.is_set():
            async with lock:
                order.append(f"job-{i}")
                await asyncio.sleep(0.005)
            i += 1

    writers = [asyncio.create_task(job_writes()) for _ in range(2)]
    await asyncio.sleep(0.01)
    waited = asyncio.get_running_loop().time()
    await _hold(lock, order, "ingest", ingest=True)
    waited = asyncio.get_running_loop().time() - waited
    stop.set()
    await asyncio.gather(*writers)
    assert "ingest" in order
    assert 0.04 <= waited < 1.0  # deferred while job writes waited, then let in


async def test_a_cancelled_waiter_neither_takes_nor_blocks_the_lock() -> None:
    lock = WriteLock()
    order: list[str] = []
    async with lock:
        waiting = asyncio.create_task(_hold(lock, order, "cancelled"))
        ingest = asyncio.create_task(_hold(lock, order, "ingest", ingest=True))
        await asyncio.sleep(0)
        waiting.cancel()
        await asyncio.sleep(0)
    await ingest
    assert order == ["ingest"]
    assert waiting.cancelled()
    assert not lock.locked()
