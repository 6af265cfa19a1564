"""bench/mutation.py --changed-since (the CI mutation step): which lines of which
promise-carrying modules a commit touched, which mutants are run, and that it returns
at once when there is nothing to mutate or nothing to compare with."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
EVENT_SOURCE = "src/headwater/triggers/event_source.py"
EMITTER = "src/headwater/triggers/emitter.py"


@pytest.fixture(scope="module")
def mutation() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_mutation", ROOT / "bench" / "mutation.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_mutation"] = module
    spec.loader.exec_module(module)
    return module


DIFF = f"""\
diff --git a/{EVENT_SOURCE} b/{EVENT_SOURCE}
index 1111111..2222222 100644
--- a/{EVENT_SOURCE}
+++ b/{EVENT_SOURCE}
@@ -26 +26 @@ from headwater import jsonsafe
-import a
+import b
@@ -40,0 +41,3 @@ class X:
+    one
+    two
+    three
@@ -348,5 +350,0 @@ class Dispatcher:
-def _short(exc: BaseException) -> str:
-    gone
diff --git a/src/headwater/cli.py b/src/headwater/cli.py
--- a/src/headwater/cli.py
+++ b/src/headwater/cli.py
@@ -1,2 +1,2 @@
-x
+y
diff --git a/{EMITTER} b/{EMITTER}
deleted file mode 100644
--- a/{EMITTER}
+++ /dev/null
@@ -1,3 +0,0 @@
-a
-b
-c
"""


def test_changed_added_and_deleted_lines_of_promise_modules_only(mutation: ModuleType) -> None:
    lines = mutation.parse_changed_lines(DIFF, [EVENT_SOURCE, EMITTER])
    # 26 changed; 41-43 added; the deletion after line 350 counts the line after it.
    # cli.py is no promise module; the emitter was deleted: nothing of it is left to mutate.
    assert lines == {EVENT_SOURCE: {26, 41, 42, 43, 351}}


def test_a_diff_of_other_files_selects_nothing(mutation: ModuleType) -> None:
    assert mutation.parse_changed_lines(DIFF, ["src/headwater/store/lease_ops.py"]) == {}
    assert mutation.parse_changed_lines("", [EVENT_SOURCE]) == {}


def test_the_cap_takes_an_even_spread_and_the_same_one_every_time(mutation: ModuleType) -> None:
    names = [f"m__mutmut_{i:02d}" for i in range(1, 31)]
    picked = mutation.pick(list(reversed(names)), 10)
    assert len(picked) == 10 == len(set(picked))
    assert picked == mutation.pick(names, 10)
    assert picked[0] == names[0] and picked[-1] >= names[26]  # the start and the end
    assert mutation.pick(names[:4], 10) == names[:4]
    assert mutation.pick(names, 0) == []


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def _repo(tmp_path: Path, second: dict[str, str]) -> Path:
    """A repository of two commits: an event source of 5 lines, then ``second``."""
    repo = tmp_path / "repo"
    (repo / Path(EVENT_SOURCE).parent).mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    (repo / EVENT_SOURCE).write_text("".join(f"line{i}\n" for i in range(1, 6)))
    (repo / "README.md").write_text("readme\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "one")
    for path, text in second.items():
        (repo / path).write_text(text)
    _git(repo, "commit", "-q", "-am", "two")
    return repo


def test_the_lines_the_last_commit_touched(mutation: ModuleType, tmp_path: Path) -> None:
    repo = _repo(tmp_path, {EVENT_SOURCE: "line1\nLINE2\nline3\nline4\nline5\nline6\n"})
    assert mutation.changed_lines_since(repo, "HEAD~1") == {EVENT_SOURCE: {2, 6}}


def test_a_depth_1_clone_deepens_itself_to_see_the_parent(
    mutation: ModuleType, tmp_path: Path
) -> None:
    repo = _repo(tmp_path, {EVENT_SOURCE: "line1\nline2\nline3\nline4\nLINE5\n"})
    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "-q", "--depth", "1", f"file://{repo}", str(clone))
    assert _git(clone, "rev-parse", "--is-shallow-repository").strip() == "true"
    assert mutation.changed_lines_since(clone, "HEAD~1") == {EVENT_SOURCE: {5}}


def test_no_parent_to_compare_with_skips_at_once(
    mutation: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = _repo(tmp_path, {EVENT_SOURCE: "changed\n"})
    lonely = tmp_path / "lonely"
    _git(tmp_path, "clone", "-q", "--depth", "1", f"file://{repo}", str(lonely))
    _git(lonely, "remote", "remove", "origin")  # nowhere to deepen from
    monkeypatch.setattr(mutation, "ROOT", lonely)
    monkeypatch.setattr(mutation, "run_child", _never)
    assert mutation.changed_since("HEAD~1", 120, 30, 2) == 0
    assert "is not in this clone" in capsys.readouterr().out


def test_a_commit_that_touched_no_promise_module_skips_at_once(
    mutation: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = _repo(tmp_path, {"README.md": "changed\n"})
    monkeypatch.setattr(mutation, "ROOT", repo)
    monkeypatch.setattr(mutation, "run_child", _never)
    assert mutation.changed_since("HEAD~1", 120, 30, 2) == 0
    assert "no promise-carrying module changed since HEAD~1" in capsys.readouterr().out


def test_a_change_runs_mutmut_on_exactly_the_changed_lines(
    mutation: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = _repo(tmp_path, {EVENT_SOURCE: "line1\nline2\nLINE3\nline4\nline5\n"})
    asked: list[dict[str, list[int]]] = []

    def child(lines: dict[str, list[int]], cap: int, max_children: int, deadline: float):  # type: ignore[no-untyped-def]
        asked.append(lines)
        return 1, False, "Traceback: mutmut fell over"

    monkeypatch.setattr(mutation, "ROOT", repo)
    monkeypatch.setattr(mutation, "CHOSEN", tmp_path / "chosen.json")
    monkeypatch.setattr(mutation, "run_child", child)
    # The run breaking (no mutants made, non-zero exit) fails the step, with its output.
    assert mutation.changed_since("HEAD~1", 120, 30, 2) == 2
    assert asked == [{EVENT_SOURCE: [3]}]
    assert "mutmut fell over" in capsys.readouterr().out


def _never(*args: object) -> None:
    raise AssertionError("mutmut must not run")


def test_a_survivor_is_shown_as_the_part_it_changed(mutation: ModuleType) -> None:
    diff = (
        "--- a\n+++ b\n@@ -1 +1 @@\n-        if attempts < limit:\n+        if attempts <= limit:\n"
    )
    assert mutation.change_of(diff) == "if attempts < limit: -> if attempts <= limit:"
    long = (
        "-    x = compute(alpha, beta, gamma, delta)\n+    x = compute(alpha, beta, None, delta)\n"
    )
    assert mutation.change_of(long) == "…lpha, beta, gamma, delta) -> …lpha, beta, None, delta)"


# -- by hand: --tests, -k, --report-only, --markdown --------------------------------------


def test_pyproject_mutmut_section_lists_the_promises(mutation: ModuleType) -> None:
    """``mutmut run`` alone (pyproject) and the script mutate and run the same files."""
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    assert cfg["only_mutate"] == list(mutation.PROMISES)
    tests = {t for files in mutation.PROMISES.values() for t in files}
    assert set(cfg["pytest_add_cli_args_test_selection"]) == tests
    assert all((ROOT / t).is_file() for t in tests)


def test_survivors_sort_by_function_then_number(mutation: ModuleType) -> None:
    names = ["m.x_b__mutmut_2", "m.x_a__mutmut_10", "m.x_a__mutmut_2", "m.x_a__mutmut_1"]
    assert sorted(names, key=mutation.mutant_order) == [
        "m.x_a__mutmut_1",
        "m.x_a__mutmut_2",
        "m.x_a__mutmut_10",
        "m.x_b__mutmut_2",
    ]


def test_tests_and_k_replace_the_selection_and_markdown_appends(
    mutation: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: list[tuple[list[str], list[str], str | None]] = []
    narrowed: list[tuple[list[str], float | None]] = []  # --only patterns, --test-timeout
    reports: list[tuple[float | None, Path | None]] = []

    def run(
        modules: list[str],
        tests: list[str],
        keyword: str | None,
        children: int,
        only: list[str],
        test_timeout: float | None,
    ) -> None:
        runs.append((modules, tests, keyword))
        narrowed.append((only, test_timeout))

    def report(modules: list[str], elapsed: float | None, **kw: Path | None) -> int:
        reports.append((elapsed, kw.get("markdown")))
        return 0

    monkeypatch.setattr(mutation, "run_mutmut", run)
    monkeypatch.setattr(mutation, "report", report)
    md = tmp_path / "runs.md"
    argv = ["mutation.py", "src/x.py", "--tests", "tests/unit/t.py", "-k", "not pg"]
    monkeypatch.setattr(sys, "argv", [*argv, "--markdown", str(md)])
    assert mutation.main() == 0  # not in PROMISES, but --tests says what guards it
    assert runs == [(["src/x.py"], ["tests/unit/t.py"], "not pg")]
    assert reports[-1][1] == md and reports[-1][0] is not None
    monkeypatch.setattr(sys, "argv", ["mutation.py", EMITTER, "--report-only"])
    assert mutation.main() == 0 and len(runs) == 1 and reports[-1][0] is None
    monkeypatch.setattr(sys, "argv", ["mutation.py", EMITTER])
    assert mutation.main() == 0
    assert runs[-1] == ([EMITTER], sorted(mutation.PROMISES[EMITTER]), None)
    assert narrowed[-1] == ([], None)  # every mutant, pyproject's per-test timeout
    only = ["--only", "*__call__*", "--only", "*_emit__*", "--test-timeout", "30"]
    monkeypatch.setattr(sys, "argv", ["mutation.py", EMITTER, *only])
    assert mutation.main() == 0
    assert narrowed[-1] == (["*__call__*", "*_emit__*"], 30.0)

    header = ("module", "score")
    mutation.append_markdown(
        md, [header, ("emitter.py", "90.0%")], [("x__mutmut_3", "survived", "a -> b")]
    )
    mutation.append_markdown(md, [header, ("emitter.py", "95.0%")], [])
    text = md.read_text()
    assert "| emitter.py | 90.0% |" in text and "| emitter.py | 95.0% |" in text
    assert "- `x__mutmut_3` (survived): `a -> b`" in text
