"""The long run of the fuzz and property suite (CI runs the same tests small).

    python bench/fuzz.py [--examples 500] [--properties 20000]

- schemathesis over the OpenAPI spec against ``headwater up`` on SQLite
  (``tests/e2e/test_fuzz_api.py``): no 5xx, no secret in any answer;
- hypothesis properties over the OUTPUT-line parser, webhook bodies and template
  rendering (``tests/unit/test_jsonsafe_properties.py``): a value or a defined
  rejection, never an unhandled exception.

Each suite is run by pytest in a subprocess with the example counts in its
environment; the exit status is pytest's (0: no failure found).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=500, help="per API operation")
    parser.add_argument("--properties", type=int, default=20_000, help="per property")
    args = parser.parse_args()
    env = {
        **os.environ,
        "HEADWATER_FUZZ_EXAMPLES": str(args.examples),
        "HEADWATER_PROPERTY_EXAMPLES": str(args.properties),
    }
    status = 0
    for suite in ("tests/unit/test_jsonsafe_properties.py", "tests/e2e/test_fuzz_api.py"):
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", suite],
            cwd=REPO,
            env=env,
            check=False,
        )
        print(f"{suite}: exit {done.returncode} in {time.monotonic() - started:.0f}s")
        status = status or done.returncode
    return status


if __name__ == "__main__":
    sys.exit(main())
