"""Start a checkout from a script, against the database ``headwater up`` uses::

python examples/workflows/start.py sqlite:///headwater.db order-1
"""

from __future__ import annotations

import asyncio
import sys

from checkout import checkout

import headwater


async def main(db_url: str, workflow_id: str) -> None:
    async with headwater.WorkflowClient(db_url) as client:
        handle = await client.start(checkout, 1, ["book", "pen"], workflow_id=workflow_id)
        print("started", handle.workflow_id, "job", handle.job_id)
        print("stage:", await client.get_event(workflow_id, "stage", timeout=30))
        await client.send(workflow_id, "shipped", "DHL-42")
        print("result:", await handle.result_async(timeout=60))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "order-1"))
