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
    python bench/mutation.py --changed-since HEAD~1 --budget 120   # CI: changed lines only
    python bench/mutation.py src/headwater/store/lease_ops.py -k "not postgres and not memory"
    python bench/mutation.py src/headwater/triggers/emitter.py \
        --tests tests/unit/test_emitter.py --markdown bench/results/mutation-runs.md
    python bench/mutation.py src/headwater/triggers/emitter.py --report-only
    python bench/mutation.py src/headwater/triggers/emitter.py --only '*__call__*' \
        --test-timeout 30

By hand: ``--tests`` replaces the modules' PROMISES test files for this run (a quick
first look, or a new test file before it joins PROMISES; a module not in PROMISES may be
mutated then); ``-k`` passes a pytest keyword expression to every test run (``-k "not
postgres and not memory"`` leaves out the PostgreSQL and in-memory cases of the store
tests, several times faster per mutant; the full suite still runs them);
``--report-only`` prints the survivors and table of the last run in ``mutants/`` without
running anything; ``--markdown`` appends the table and the survivors to a file;
``--only`` runs just the mutants whose names match (the others are "not run"): a slow
module a few functions at a time.
Survivors are listed by function, then by mutant number.

``--changed-since REV`` is the CI step (.ci/run): only the mutants on the lines of PROMISES
modules that differ from REV, at most ``--max-mutants`` of them, within ``--budget``
seconds of wall time (what is left untested when it runs out is counted as "not run").
It reports survivors and never fails for them; it fails only when the run itself breaks.
It returns at once when no such line changed or REV is not in the clone.

Score = killed / (killed + survived + no tests); timeouts count as killed (the mutant
hangs a test, which then fails). Each run starts from a fresh ``mutants/``, so a cached
result never describes other code. The base configuration is ``[tool.mutmut]`` in
pyproject.toml; this script narrows it to the files asked for.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Module -> the test files that guard its promises. Only in-process tests: a test that
# starts `headwater` or `python -m ...` as a subprocess would import the unmutated code.
# pyproject's [tool.mutmut] lists the same modules and test files (a unit test checks).
PROMISES: dict[str, list[str]] = {
    "src/headwater/dispatch/dispatcher.py": [
        "tests/unit/test_dispatcher_prepare.py",
        "tests/unit/test_event_source_states.py",
        "tests/integration/test_dispatcher.py",
    ],
    "src/headwater/triggers/event_source.py": ["tests/unit/test_event_source_states.py"],
    "src/headwater/triggers/emitter.py": [
        "tests/unit/test_emitter.py",
        "tests/unit/test_event_cursor.py",
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


_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,(\d+))? @@")


def parse_changed_lines(diff: str, modules: Iterable[str]) -> dict[str, set[int]]:
    """Lines of the new version of each of ``modules`` that a ``git diff -U0`` touched.

    An added or changed line counts itself; a hunk that only deletes counts the line
    after the deletion (the code that now runs in the deleted code's place). Files
    that are not in ``modules`` are left out; a deleted file has no lines."""
    wanted = set(modules)
    changed: dict[str, set[int]] = {}
    current: str | None = None
    for line in diff.splitlines():
        if line.startswith("+++ "):
            path = line[4:].strip()
            path = path[2:] if path.startswith("b/") else path
            current = path if path in wanted else None
            continue
        match = _HUNK.match(line)
        if match is None or current is None:
            continue
        start, count = int(match[1]), int(match[2] if match[2] is not None else 1)
        lines = range(start, start + count) if count else range(max(1, start + 1), start + 2)
        changed.setdefault(current, set()).update(lines)
    return {path: lines for path, lines in changed.items() if lines}


def git(root: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, timeout=timeout, check=False
    )


def resolve_base(root: Path, rev: str) -> str | None:
    """The commit ``rev`` names, deepening a shallow clone by one commit if it must;
    None when the clone does not have it (a depth-1 clone with no remote to ask)."""

    def lookup() -> str | None:
        found = git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
        return found.stdout.strip() or None if found.returncode == 0 else None

    commit = lookup()
    if (
        commit is None
        and git(root, "rev-parse", "--is-shallow-repository").stdout.strip() == "true"
    ):
        try:
            git(root, "fetch", "--quiet", "--deepen=1", timeout=60)
        except subprocess.TimeoutExpired:
            return None
        commit = lookup()
    return commit


def changed_lines_since(root: Path, rev: str) -> dict[str, set[int]] | None:
    """PROMISES module -> lines changed since ``rev`` (None: ``rev`` is not available)."""
    base = resolve_base(root, rev)
    if base is None:
        return None
    diff = git(root, "diff", "-U0", "--no-color", "--no-ext-diff", base, "--", *PROMISES)
    if diff.returncode != 0:
        raise RuntimeError(f"git diff {base} failed: {diff.stderr.strip()}")
    return parse_changed_lines(diff.stdout, PROMISES)


def pick(names: list[str], cap: int) -> list[str]:
    """At most ``cap`` of ``names``, spread evenly over them (the same ones every time)."""
    ordered = sorted(names)
    if cap <= 0:
        return []
    if len(ordered) <= cap:
        return ordered
    step = len(ordered) / cap
    return [ordered[int(i * step)] for i in range(cap)]


def run_mutmut(
    modules: list[str],
    tests: list[str],
    keyword: str | None,
    max_children: int,
    only: Sequence[str] = (),
    test_timeout: float | None = None,
) -> None:
    """mutmut's own ``run``, with only_mutate, the test selection and ``-k`` narrowed;
    ``only``: run just the mutants whose names match one of these fnmatch patterns;
    ``test_timeout``: pytest-timeout's limit per test (a mutant that hangs a test fails
    it then, and counts as killed, instead of holding a worker for pyproject's 180 s)."""
    from mutmut import configuration
    from mutmut.__main__ import _run

    os.chdir(ROOT)
    shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    cfg = configuration.config()
    cfg.only_mutate = modules
    cfg.pytest_add_cli_args_test_selection = tests
    if keyword:
        cfg.pytest_add_cli_args = [*cfg.pytest_add_cli_args, "-k", keyword]
    if test_timeout:
        cfg.pytest_add_cli_args = [*cfg.pytest_add_cli_args, "--timeout", f"{test_timeout:g}"]
    print(f"mutating {len(modules)} file(s) against {len(tests)} test file(s)", flush=True)
    try:
        _run(list(only), max_children)
    except SystemExit as exc:  # mutmut exits when the clean run fails, and at the end
        if exc.code not in (0, None):
            raise


def mutate_lines(lines: dict[str, list[int]], cap: int, max_children: int) -> None:
    """Child of ``--changed-since``: mutate only ``lines`` of each module, then run at
    most ``cap`` of those mutants (their names go to CHOSEN, for the parent's report)."""
    from mutmut import configuration
    from mutmut.__main__ import _run, create_mutants
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.state import state
    from mutmut.utils.file_utils import copy_also_copy_files, copy_src_dir, setup_source_paths

    os.chdir(ROOT)
    shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    cfg = configuration.config()
    cfg.only_mutate = list(lines)
    cfg.mutate_only_covered_lines = False
    cfg.pytest_add_cli_args_test_selection = sorted({t for m in lines for t in PROMISES[m]})
    # mutmut's "covered lines" filter, fed the changed lines: no mutant anywhere else.
    state()._covered_lines = {
        str((ROOT / "mutants" / m).absolute()): set(numbers) for m, numbers in lines.items()
    }
    (ROOT / "mutants").mkdir()
    copy_src_dir()
    copy_also_copy_files()
    setup_source_paths()
    create_mutants(max_children)
    names: list[str] = []
    for module in lines:
        data = SourceFileMutationData(path=Path(module))
        data.load()
        names.extend(data.exit_code_by_key)
    chosen = pick(names, cap)
    CHOSEN.write_text(json.dumps({"on_changed_lines": len(names), "chosen": chosen}))
    print(f"{len(names)} mutant(s) on the changed lines; running {len(chosen)}", flush=True)
    if not chosen:
        return
    try:
        _run(chosen, max_children)
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise


CHOSEN = ROOT / "mutants" / "chosen.json"
# What mutmut says (and then exits 1) when no selected test runs any mutated function.
NO_TEST_AT_ALL = "could not find any test case for any mutant"


def mark_untested(modules: list[str], names: set[str]) -> None:
    from mutmut.mutation.data import SourceFileMutationData

    for module in modules:
        data = SourceFileMutationData(path=Path(module))
        data.load()
        for name in data.exit_code_by_key:
            if name in names and data.exit_code_by_key[name] is None:
                data.exit_code_by_key[name] = 33  # mutmut's own code for "no tests"
        data.save()


def run_child(
    lines: dict[str, list[int]], cap: int, max_children: int, deadline: float
) -> tuple[int, bool, str]:
    """``mutate_lines`` in a child process until ``deadline`` (monotonic); returns its
    exit code, whether the deadline stopped it, and its output."""
    with tempfile.TemporaryFile("w+") as log:  # mutmut's progress: shown only if it broke
        child = subprocess.Popen(
            [sys.executable, __file__, "--mutate-lines", json.dumps(lines),
             "--max-mutants", str(cap), "--max-children", str(max_children)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its test workers go with it if it must be killed
        )  # fmt: skip
        out_of_time = False
        try:
            code = child.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            # mutmut stops its workers and keeps every result so far on an interrupt.
            out_of_time = True
            child.send_signal(signal.SIGINT)
            try:
                code = child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                code = child.wait()
        log.seek(0)
        return code, out_of_time, log.read()


def changed_since(rev: str, budget: float, cap: int, max_children: int) -> int:
    """The CI step: see the module docstring. 0 unless the run itself broke."""
    started = time.monotonic()
    lines = changed_lines_since(ROOT, rev)
    if lines is None:
        print(f"mutation: {rev} is not in this clone (shallow?): nothing to compare, skipped")
        return 0
    if not lines:
        print(f"mutation: no promise-carrying module changed since {rev}, skipped")
        return 0
    for module, numbers in sorted(lines.items()):
        print(f"mutation: {module}: {len(numbers)} changed line(s)")
    CHOSEN.unlink(missing_ok=True)
    wanted = {m: sorted(n) for m, n in lines.items()}
    # What is left of the budget after the deadline: stopping mutmut and the report.
    deadline = started + max(10.0, budget - 15.0)
    code, out_of_time, output = run_child(wanted, cap, max_children, deadline)

    def broke(why: str) -> int:
        print(f"mutation: the run broke {why} (exit {code}); its last lines:")
        print("\n".join(output.replace("\r", "\n").splitlines()[-40:]))
        return 2

    if not CHOSEN.exists():
        if out_of_time:
            print(f"mutation: the {budget:g}s budget ran out before any mutant was made")
            return 0
        return broke("before it made its mutants")
    chosen = json.loads(CHOSEN.read_text())
    if not chosen["chosen"]:
        print("mutation: no mutant on the changed lines (imports, comments, deletions)")
        return 0 if code == 0 else broke("making mutants")
    untested = NO_TEST_AT_ALL in output
    if code != 0 and not out_of_time and not untested:
        return broke("running the mutants")
    os.chdir(ROOT)
    if untested:  # mutmut stops before marking them; they are survivors all the same
        print("mutation: no test in the selection runs the mutated functions")
        mark_untested(sorted(lines), set(chosen["chosen"]))
    report(sorted(lines), time.monotonic() - started, set(chosen["chosen"]))
    left = chosen["on_changed_lines"] - len(chosen["chosen"])
    if left:
        print(f"({left} more mutant(s) on the changed lines were left out: --max-mutants {cap})")
    if out_of_time:
        print(f"(the {budget:g}s budget ran out: what was not reached counts as not run)")
    return 0


def _common_start(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def change_of(diff: str, width: int = 90, context: int = 12) -> str:
    """A mutant's diff in one line: the part it changed, old -> new, with a few
    characters of the unchanged code around it."""
    lines = diff.splitlines()
    old = " ".join(x[1:].strip() for x in lines if x.startswith("-") and not x.startswith("---"))
    new = " ".join(x[1:].strip() for x in lines if x.startswith("+") and not x.startswith("+++"))
    if not old and not new:
        return diff.strip()[:width]
    head = _common_start(old, new)
    tail = _common_start(old[head:][::-1], new[head:][::-1])
    cut = head - context if head - context > 3 else 0  # no "…" for a character or two
    before = ("…" if cut else "") + old[cut:head]
    after = old[len(old) - tail :][:context] + (
        "…" if tail > context + 3 else old[len(old) - tail + context :]
    )

    def middle(text: str) -> str:
        return before + text[head : len(text) - tail] + after

    text = f"{middle(old)} -> {middle(new)}"
    return text if len(text) <= width else text[: width - 1] + "…"


def report(
    modules: list[str],
    elapsed: float | None,
    only: set[str] | None = None,
    markdown: Path | None = None,
) -> int:
    """Print survivors and the score table; returns how many survived. ``only``: count
    just these mutants (a ``--changed-since`` run); one never checked is "not run".
    ``elapsed`` None: the last run's results (``--report-only``)."""
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code

    rows: list[tuple[str, Counter[str] | None]] = []
    survivors: list[tuple[str, str]] = []
    for module in modules:
        data = SourceFileMutationData(path=Path(module))
        data.load()
        counts: Counter[str] = Counter()
        for name, code in data.exit_code_by_key.items():
            if only is not None and name not in only:
                continue
            status = status_by_exit_code[code]
            counts["killed" if status in KILLED else status] += 1
            if status in ("survived", "no tests", "suspicious"):
                survivors.append((name, status))
        rows.append((module, counts))
    survivors.sort(key=lambda item: mutant_order(item[0]))

    table = [("survivor", "status", "change")]
    for name, status in survivors:
        try:
            diff = get_diff_for_mutant(name).rstrip()
        except Exception as exc:  # a diff is a help, not the result
            diff = f"(no diff: {exc})"
        if only is None:
            print(f"\n--- {status}: {name}\n{diff}")
        table.append((name.rpartition(".")[2], status, change_of(diff)))
    if len(table) > 1:
        print(f"\n{len(table) - 1} mutant(s) no test noticed:")
        widths = [max(len(row[i]) for row in table) for i in range(2)]
        for row in table:
            print(f"  {row[0].ljust(widths[0])}  {row[1].ljust(widths[1])}  {row[2]}")

    took = f" in {elapsed:.0f}s" if elapsed is not None else " (the last run, from mutants/)"
    print(f"\nmutation run over {len(modules)} file(s){took}\n")
    header = ("module", "mutants", "killed", "survived", "no tests", "not run", "other", "score")
    lines = [header]
    totals: Counter[str] = Counter()
    for module, of_module in [*rows, ("total", None)]:
        if of_module is None:
            counts = totals
        else:
            counts = of_module
            totals.update(counts)
        killed, survived, untested = counts["killed"], counts["survived"], counts["no tests"]
        not_run = counts["not checked"]
        other = sum(counts.values()) - killed - survived - untested - not_run
        judged = killed + survived + untested
        score = f"{100 * killed / judged:.1f}%" if judged else "-"
        short = module.removeprefix("src/headwater/")
        lines.append(
            (short, str(sum(counts.values())), str(killed), str(survived), str(untested),
             str(not_run), str(other), score)
        )  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
    if markdown is not None:
        append_markdown(markdown, lines, table[1:])
    return totals["survived"] + totals["no tests"]


def mutant_order(name: str) -> tuple[str, int]:
    """``module.x_func__mutmut_12`` sorts by function, then by number (not 1, 10, 2)."""
    stem, _, number = name.rpartition("__mutmut_")
    return (stem, int(number) if number.isdigit() else 0)


def append_markdown(
    path: Path, lines: Sequence[tuple[str, ...]], survivors: Sequence[tuple[str, str, str]]
) -> None:
    """The score table (and each survivor with its change) appended as Markdown."""
    out = ["| " + " | ".join(lines[0]) + " |", "|" + "---|" * len(lines[0])]
    out += ["| " + " | ".join(line) + " |" for line in lines[1:]]
    if survivors:
        out += ["", "Survivors:", ""]
        out += [f"- `{name}` ({status}): `{change}`" for name, status, change in survivors]
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
        "--changed-since", metavar="REV", help="CI: only mutants on lines changed since REV"
    )
    parser.add_argument("--budget", type=float, default=120.0, help="seconds (--changed-since)")
    parser.add_argument("--max-mutants", type=int, default=30, help="cap (--changed-since)")
    parser.add_argument("--mutate-lines", help=argparse.SUPPRESS)  # its child process
    parser.add_argument(
        "--tests", nargs="+", metavar="TEST", help="test files or node ids instead of PROMISES'"
    )
    parser.add_argument("-k", dest="keyword", help="pytest -k expression for every test run")
    parser.add_argument(
        "--report-only", action="store_true", help="print the last run's result, run nothing"
    )
    parser.add_argument("--markdown", type=Path, help="append the score table to this file")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="PATTERN",
        help="run only the mutants whose name matches (fnmatch, repeatable), e.g. '*__call__*'",
    )
    parser.add_argument(
        "--test-timeout",
        type=float,
        metavar="SECS",
        help="per-test limit for the mutants' runs (a hang is a kill sooner); default 180",
    )
    args = parser.parse_args()

    if args.mutate_lines is not None:
        mutate_lines(json.loads(args.mutate_lines), args.max_mutants, args.max_children)
        return 0
    if args.changed_since is not None:
        return changed_since(args.changed_since, args.budget, args.max_mutants, args.max_children)

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
        return 1 if report(modules, None, markdown=args.markdown) else 0
    tests = args.tests or sorted({t for m in modules for t in PROMISES[m]})
    started = time.monotonic()
    run_mutmut(modules, tests, args.keyword, args.max_children, args.only, args.test_timeout)
    survived = report(modules, time.monotonic() - started, markdown=args.markdown)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
