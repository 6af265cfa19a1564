"""Mutation testing of the modules that carry user-visible promises (mutmut 3).

mutmut copies ``src/`` and ``tests/`` into ``mutants/`` (git-ignored), plants one small
bug at a time in the files asked for, and runs the test files that guard them (only the
tests that execute the mutated function). A mutant that no test notices "survived": a
bug of that shape would ship. This prints the survivors (with their diff) and a table of
scores, per file:

    python bench/mutation.py                       # every module in PROMISES
    python bench/mutation.py src/headwater/triggers/event_source.py
    python bench/mutation.py --changed             # the PROMISES modules changed vs main
    python bench/mutation.py --changed --base origin/main --max-children 2

Score = killed / (killed + survived + no tests); timeouts count as killed (the mutant
hangs a test, which then fails). Each run starts from a fresh ``mutants/``, so a cached
result never describes other code. The base configuration is ``[tool.mutmut]`` in
pyproject.toml; this script narrows it to the files asked for.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Module -> the test files that guard its promises. Only fast, in-process tests: a test
# that starts `headwater` or `python -m ...` as a subprocess would import the unmutated
# code, and the slow integration files would make every mutant take minutes.
PROMISES: dict[str, list[str]] = {
    "src/headwater/dispatch/dispatcher.py": [
        "tests/unit/test_dispatcher_prepare.py",
        "tests/unit/test_event_source_states.py",
    ],
    "src/headwater/triggers/event_source.py": ["tests/unit/test_event_source_states.py"],
    "src/headwater/triggers/emitter.py": ["tests/unit/test_emitter.py"],
    "src/headwater/triggers/receivers/base.py": ["tests/unit/test_receivers_base.py"],
    "src/headwater/triggers/receivers/common.py": ["tests/unit/test_receivers_base.py"],
    "src/headwater/store/job_writes.py": [
        "tests/unit/test_job_writes.py",
        "tests/unit/test_group_commit.py",
    ],
    "src/headwater/store/lease_ops.py": ["tests/integration/test_store_leases.py"],
    "src/headwater/workspace/secrets.py": [
        "tests/unit/test_workspace_secrets.py",
        "tests/unit/test_api_tasks.py",
        "tests/integration/test_api_real_node.py",
    ],
    "src/headwater/sdk/consumers/handling.py": ["tests/integration/test_sdk_consumer.py"],
    "src/headwater/sdk/consumers/crashloop.py": ["tests/unit/test_sdk_crashloop.py"],
}

KILLED = {"killed", "timeout", "caught by type check", "segfault"}


def changed_modules(base: str) -> list[str]:
    """PROMISES modules that differ from ``base`` (committed or not)."""
    out = subprocess.run(
        ["git", "diff", "--name-only", base, "--", "src"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    changed = set(out.split())
    return [m for m in PROMISES if m in changed]


def run_mutmut(modules: list[str], max_children: int) -> None:
    """mutmut's own ``run``, with only_mutate and the test selection narrowed."""
    from mutmut import configuration
    from mutmut.__main__ import _run

    os.chdir(ROOT)
    shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    cfg = configuration.config()
    cfg.only_mutate = modules
    tests = sorted({t for m in modules for t in PROMISES.get(m, [])})
    cfg.pytest_add_cli_args_test_selection = tests
    print(f"mutating {len(modules)} file(s) against {len(tests)} test file(s)", flush=True)
    try:
        _run([], max_children)
    except SystemExit as exc:  # mutmut exits when the clean run fails, and at the end
        if exc.code not in (0, None):
            raise


def report(modules: list[str], elapsed: float) -> int:
    """Print survivors and the score table; returns how many survived."""
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code

    rows = []
    survivors: list[tuple[str, str]] = []
    for module in modules:
        data = SourceFileMutationData(path=Path(module))
        data.load()
        counts: Counter[str] = Counter()
        for name, code in data.exit_code_by_key.items():
            status = status_by_exit_code[code]
            counts["killed" if status in KILLED else status] += 1
            if status in ("survived", "no tests", "suspicious"):
                survivors.append((name, status))
        rows.append((module, counts))

    for name, status in survivors:
        print(f"\n--- {status}: {name}")
        try:
            print(get_diff_for_mutant(name).rstrip())
        except Exception as exc:  # a diff is a help, not the result
            print(f"(no diff: {exc})")

    print(f"\nmutation run over {len(modules)} file(s) in {elapsed:.0f}s\n")
    header = ("module", "mutants", "killed", "survived", "no tests", "other", "score")
    lines = [header]
    totals: Counter[str] = Counter()
    for module, counts in [*rows, ("total", None)]:
        if counts is None:
            counts = totals
        else:
            totals.update(counts)
        killed, survived, untested = counts["killed"], counts["survived"], counts["no tests"]
        other = sum(counts.values()) - killed - survived - untested
        judged = killed + survived + untested
        score = f"{100 * killed / judged:.1f}%" if judged else "-"
        short = module.removeprefix("src/headwater/")
        lines.append(
            (short, str(sum(counts.values())), str(killed), str(survived), str(untested),
             str(other), score)
        )  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
    return totals["survived"] + totals["no tests"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("files", nargs="*", help="modules to mutate (default: all PROMISES)")
    parser.add_argument("--changed", action="store_true", help="the PROMISES files changed")
    parser.add_argument("--base", default="main", help="what --changed compares with")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()

    if args.changed:
        modules = changed_modules(args.base)
        if not modules:
            print(f"no promise-carrying module changed since {args.base}")
            return 0
    else:
        modules = args.files or list(PROMISES)
    unknown = [m for m in modules if m not in PROMISES]
    if unknown:
        parser.error(f"not in PROMISES (add it with its test files): {', '.join(unknown)}")
    started = time.monotonic()
    run_mutmut(modules, args.max_children)
    survived = report(modules, time.monotonic() - started)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
