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
    python bench/mutation.py src/headwater/store/lease_ops.py -k "not postgres and not memory"
    python bench/mutation.py src/headwater/triggers/emitter.py \
        --tests tests/unit/test_emitter.py --markdown bench/results/mutation-runs.md
    python bench/mutation.py src/headwater/triggers/emitter.py --report-only

``--tests`` replaces the module's PROMISES test files for this run (a quick first look, or
a new test file before it joins PROMISES); ``-k`` passes a pytest keyword expression to
every test run (``-k "not postgres and not memory"`` leaves out the PostgreSQL and
in-memory cases of the store tests, which makes each mutant several times faster; the
lead's full suite still runs them); ``--report-only`` prints the
survivors and table of the last run without running anything; ``--markdown`` appends the
table (and the survivors' names) to a file.

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
        "tests/integration/test_dispatcher.py",
    ],
    "src/headwater/triggers/event_source.py": ["tests/unit/test_event_source_states.py"],
    "src/headwater/triggers/emitter.py": [
        "tests/unit/test_emitter.py",
        "tests/integration/test_local_emitter.py",
    ],
    "src/headwater/triggers/receivers/base.py": [
        "tests/unit/test_receivers_base.py",
        "tests/integration/test_batch_receiver.py",
    ],
    "src/headwater/triggers/receivers/common.py": [
        "tests/unit/test_receivers_base.py",
        "tests/integration/test_batch_receiver.py",
    ],
    "src/headwater/store/job_writes.py": [
        "tests/unit/test_job_writes.py",
        "tests/unit/test_group_commit.py",
        "tests/integration/test_store.py",
    ],
    "src/headwater/store/lease_ops.py": ["tests/integration/test_store_leases.py"],
    "src/headwater/workspace/secrets.py": [
        "tests/unit/test_workspace_secrets.py",
        "tests/unit/test_api_tasks.py",
        "tests/integration/test_api_real_node.py",
    ],
    # test_sdk_consumer.py (Redis, worker pipelines: 73 s on SQLite alone) guards the
    # same promises end to end; test_sdk_handling.py drives the processor directly.
    "src/headwater/sdk/consumers/handling.py": ["tests/integration/test_sdk_handling.py"],
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


def run_mutmut(
    modules: list[str], tests: list[str], keyword: str | None, max_children: int
) -> None:
    """mutmut's own ``run``, with only_mutate and the test selection narrowed."""
    from mutmut import configuration
    from mutmut.__main__ import _run

    os.chdir(ROOT)
    shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    cfg = configuration.config()
    cfg.only_mutate = modules
    cfg.pytest_add_cli_args_test_selection = tests
    if keyword:
        cfg.pytest_add_cli_args = [*cfg.pytest_add_cli_args, "-k", keyword]
    print(f"mutating {len(modules)} file(s) against {len(tests)} test file(s)", flush=True)
    try:
        _run([], max_children)
    except SystemExit as exc:  # mutmut exits when the clean run fails, and at the end
        if exc.code not in (0, None):
            raise


def report(modules: list[str], elapsed: float | None, markdown: Path | None = None) -> int:
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
        survivors.sort(key=lambda item: _mutant_order(item[0]))
        rows.append((module, counts))

    for name, status in survivors:
        print(f"\n--- {status}: {name}")
        try:
            print(get_diff_for_mutant(name).rstrip())
        except Exception as exc:  # a diff is a help, not the result
            print(f"(no diff: {exc})")

    took = f" in {elapsed:.0f}s" if elapsed is not None else " (last run, from mutants/)"
    print(f"\nmutation run over {len(modules)} file(s){took}\n")
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
    if markdown is not None:
        _append_markdown(markdown, lines, survivors)
    return totals["survived"] + totals["no tests"]


def _mutant_order(name: str) -> tuple[str, int]:
    """``module.x_func__mutmut_12`` sorts by function, then by number (not 1, 10, 2)."""
    stem, _, number = name.rpartition("__mutmut_")
    return (stem, int(number) if number.isdigit() else 0)


def _append_markdown(
    path: Path, lines: list[tuple[str, ...]], survivors: list[tuple[str, str]]
) -> None:
    out = ["| " + " | ".join(lines[0]) + " |", "|" + "---|" * len(lines[0])]
    out += ["| " + " | ".join(line) + " |" for line in lines[1:]]
    if survivors:
        out += ["", "Survivors:", ""]
        out += [f"- `{name}` ({status})" for name, status in survivors]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write("\n".join(out) + "\n\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("files", nargs="*", help="modules to mutate (default: all PROMISES)")
    parser.add_argument("--changed", action="store_true", help="the PROMISES files changed")
    parser.add_argument("--base", default="main", help="what --changed compares with")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--tests", nargs="+", metavar="TEST", help="test files or node ids instead of PROMISES'"
    )
    parser.add_argument("-k", dest="keyword", help="pytest -k expression for every test run")
    parser.add_argument(
        "--report-only", action="store_true", help="print the last run's result, run nothing"
    )
    parser.add_argument("--markdown", type=Path, help="append the score table to this file")
    args = parser.parse_args()

    if args.changed:
        modules = changed_modules(args.base)
        if not modules:
            print(f"no promise-carrying module changed since {args.base}")
            return 0
    else:
        modules = args.files or list(PROMISES)
    unknown = [m for m in modules if m not in PROMISES]
    if unknown and not args.tests:
        parser.error(f"not in PROMISES (add it with its test files): {', '.join(unknown)}")
    if args.report_only:
        os.chdir(ROOT)
        return 1 if report(modules, None, args.markdown) else 0
    tests = args.tests or sorted({t for m in modules for t in PROMISES.get(m, [])})
    started = time.monotonic()
    run_mutmut(modules, tests, args.keyword, args.max_children)
    survived = report(modules, time.monotonic() - started, args.markdown)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
