"""The orders demo's event source: a stand-in for a queue consumer.

It prints 20 demo orders, one every 0.2 s, each as an `OUTPUT: {json}` line; headwater
turns each of those lines into a job of `process-order`. Other lines are plain logs.
Order 7 has an amount of 0, which `process-order` declines. Then it exits 0: with
`restart_policy: on_failure` a clean exit leaves the trigger idle, so the demo ends.
"""

import json
import os
import sys
import time

CUSTOMERS = ["alice", "bob", "charlie", "dagny", "erik"]
COUNT = int(os.environ.get("ORDER_COUNT", "20"))
PAUSE = float(os.environ.get("ORDER_PAUSE_SECS", "0.2"))


def main() -> int:
    print(f"consumer starting: {COUNT} demo orders from {os.environ.get('ORDER_SOURCE', 'demo')}")
    for n in range(1, COUNT + 1):
        order = {
            "orderId": f"ord-{n:04d}",
            "amount": 0 if n == 7 else round(9.5 * n, 2),
            "customer": CUSTOMERS[n % len(CUSTOMERS)],
        }
        if n % 5 == 0:
            print(f"received {n} orders so far")
        print("OUTPUT: " + json.dumps(order))
        sys.stdout.flush()  # a pipe is block-buffered: push each event out now
        time.sleep(PAUSE)
    print("no more orders; exiting")
    return 0


if __name__ == "__main__":
    sys.exit(main())
