"""What Strøm's tests assert about its own workspaces, in our own words (read by
``strom_corpus.py``). Each entry names the Strøm test that asserts it; nothing of Strøm's
text or code is copied here."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Run:
    """One job a Strøm test starts, and what that test asserts about it."""

    task: str
    input: dict[str, Any] = field(default_factory=dict)
    status: str | None = "completed"  # None: Strøm's test does not assert it
    logs: tuple[str, ...] = ()  # substrings of the job's log (all its steps)
    steps: dict[str, str] = field(default_factory=dict)  # step -> status
    only_steps: bool = False  # the job has exactly the steps in ``steps``
    step_error: dict[str, tuple[str, ...]] = field(default_factory=dict)  # case-insensitive
    output: dict[str, dict[str, Any]] = field(default_factory=dict)  # step -> subset
    hook: tuple[str, ...] = ()  # a hook job (source_type hook) ends in one of these
    hook_logs: tuple[str, ...] = ()
    child: tuple[str, str] | None = None  # a sub-task job: (task, status)
    input_kept: dict[str, Any] = field(default_factory=dict)  # the job's stored input
    artifacts: tuple[str, ...] = ()  # files the job keeps
    interrupt: str | None = None  # Ctrl-C once this step runs (Strøm: cancel via API)
    # The task's state before the run (Strøm's test uploads a snapshot; headwater has no
    # upload API, so the script writes it into the store the way a finished step would).
    state: dict[str, Any] | None = None
    state_files: dict[str, str] = field(default_factory=dict)  # file name -> text
    skip: str | None = None  # why this run cannot happen here (yet)
    source: str = ""  # where Strøm asserts it


@dataclass(frozen=True)
class FileCheck:
    validates: bool = True
    runs: tuple[Run, ...] = ()
    why_invalid: str = ""  # when Strøm's file is expected not to validate here (yet)
    # Other workspaces loaded beside this one (name -> corpus file), through a config
    # listing several folders (README "Several workspaces"); this file's is `default`.
    workspaces: dict[str, str] = field(default_factory=dict)


E2E_SH = "tests/e2e.sh"
RUST = "crates/stroem-e2e/tests/e2e_test.rs"
UI = "ui/e2e/*.spec.ts"
DOCS = "docs (workflow-basics: continue_on_failure)"

EXPECTATIONS: dict[str, FileCheck] = {
    "workspace/.workflows/hello.yaml": FileCheck(
        runs=(
            Run(
                "hello-world",
                {"name": "E2E Test"},
                logs=("Hello E2E Test", "HELLO E2E TEST"),
                steps={"say-hello": "completed", "shout-it": "completed"},
                source=E2E_SH,
            ),
            Run(
                "hello-with-warning",
                logs=("Hello World", "this is a warning"),
                source="not run by Strøm's tests; defaults",
            ),
        )
    ),
    "workspace/.workflows/deploy.yaml": FileCheck(
        runs=(
            Run(
                "deploy-pipeline",
                {"env": "test"},
                logs=(
                    "Checking system status",
                    "Deployment complete",
                    "Deployment to test completed",
                ),
                source=E2E_SH,
            ),
        )
    ),
    "workspace/.workflows/hooks-test.yaml": FileCheck(
        runs=(
            Run(
                "python-crash-with-hook",
                status="failed",
                logs=("Traceback",),
                step_error={"crash": ("KeyError", "missing_key")},
                hook=("completed", "failed"),
                hook_logs=("HOOK_FIRED", "status=failed", "KeyError"),
                source=E2E_SH,
            ),
        )
    ),
    "workspace/.workflows/state-test.yaml": FileCheck(
        runs=(
            # Strøm's test uploads a snapshot holding hello.txt with `?greeting=hi`, then
            # runs the task: the step reads the file from $STATE_DIR and the value as
            # `state.greeting`.
            Run(
                "read-state",
                logs=("FILE_CONTENT: hello from state", "TEMPLATE_GREETING: hi"),
                state={"greeting": "hi"},
                state_files={"hello.txt": "hello from state\n"},
                source=E2E_SH,
            ),
            # Without a snapshot the script's own fallbacks print (not run by Strøm's tests).
            Run(
                "read-state",
                logs=("FILE_CONTENT: (no file)", "TEMPLATE_GREETING: (no greeting)"),
                source="the file's fallbacks; no snapshot",
            ),
        ),
    ),
    "workspace/.workflows/xref.yaml": FileCheck(
        workspaces={"test": "tests/e2e-workspace/remote-cat.yaml"},
        runs=(
            # The step uses the `test` workspace's action, which reads a file of the
            # `test` folder: the action runs in its owner's folder.
            Run("xref", logs=("CROSS_WS_OK",), steps={"run": "completed"}, source=E2E_SH),
        ),
    ),
    "workspace/.workflows/multi-select.yaml": FileCheck(
        runs=(
            # Strøm's UI test checks only that the list reaches the job's input: the step
            # itself fails there too (`join` of the JSON string the step input renders to;
            # `input.tags` undefined when no tag is picked).
            Run(
                "multi-select-demo",
                {"environments": ["dev", "staging"]},
                status=None,
                input_kept={"environments": ["dev", "staging"]},
                source=UI,
            ),
            Run(
                "multi-select-demo",
                {"environments": ["dev"], "tags": ["hotfix"]},
                status=None,
                input_kept={"tags": ["hotfix"]},
                source=UI,
            ),
        )
    ),
    "workspace/.workflows/pipeline.yaml": FileCheck(
        runs=(
            Run(
                "data-pipeline",
                logs=("Processing test", "Summarizing processed-test"),
                output={"summarize": {"summary": "processed-test done"}},
                source="UI opens the task; run with defaults",
            ),
        )
    ),
    "workspace/.workflows/failing.yaml": FileCheck(
        runs=(
            Run(
                "always-failing",
                status="failed",
                steps={"doom": "failed"},
                step_error={"doom": ("exit code",)},
                source=DOCS,
            ),
            Run(
                "fail-in-chain",
                status="failed",
                steps={"step-fail": "failed", "step-after": "skipped"},
                source=DOCS,
            ),
            Run(
                "fail-continue",
                status="failed",
                logs=("Hello test",),
                steps={"step-fail": "failed", "step-after": "completed"},
                source=DOCS,
            ),
        )
    ),
    "tests/e2e-workspace/produce-artifacts.yaml": FileCheck(
        runs=(Run("produce-artifacts", artifacts=("report.html", "status.txt"), source=E2E_SH),)
    ),
    "tests/e2e-workspace/remote-cat.yaml": FileCheck(),
    "harness.rs:WORKFLOW_YAML": FileCheck(
        runs=(
            Run(
                "simple-echo",
                {"name": "Alice"},
                logs=("Hello Alice!",),
                steps={"greet": "completed"},
                only_steps=True,
                source=RUST,
            ),
            Run(
                "two-step-chain",
                {"name": "Bob"},
                logs=("HELLO BOB!",),
                steps={"greet": "completed", "shout": "completed"},
                only_steps=True,
                output={"greet": {"greeting": "Hello Bob!"}},
                source=RUST,
            ),
            Run(
                "failing-task",
                status="failed",
                steps={"fail": "failed"},
                only_steps=True,
                step_error={"fail": ("exit code",)},
                source=RUST,
            ),
            Run("hook-on-error", status="failed", hook=("completed",), source=RUST),
            Run("slow-task", status="cancelled", interrupt="wait", source=RUST),
            Run(
                "slow-task",
                skip="a worker that stops heartbeating: deliberately different (README), "
                "its job runs again; headwater's kill -9 tests cover it",
                source=RUST,
            ),
            Run("simple-echo", logs=("Hello E2E!",), source=RUST),
            Run("hook-on-success", hook=("completed",), source=RUST),
            Run(
                "parent-task",
                {"name": "Child"},
                steps={"child": "completed"},
                only_steps=True,
                child=("simple-echo", "completed"),
                source=RUST,
            ),
            Run(
                "simple-echo",
                {"name": "NeverRun"},
                skip="cancelling a pending job needs a "
                "server without workers: tests/e2e cover `headwater cancel`",
                source=RUST,
            ),
        )
    ),
}


# A docs block is often a fragment: it uses actions, files or fields the page shows
# elsewhere (or a placeholder). Such errors say nothing about headwater.
FRAGMENT = re.compile(
    r"is not defined|does not exist \(looked for|missing required key `flow`|`flow` should be"
    r"|`<[a-z-]+>`|'<[a-z-]+>'"
)
# Errors that name a Strøm feature headwater refuses on purpose, or for now; the README's
# "Coming from Strøm" table gives each its reason. (Approval, on_suspended, on_cancel,
# task-level retry and task state are built: an error about them is a real mismatch.)
KNOWN = {
    "agent actions (not supported)": r"agent actions",
    "languages other than shell/python (not supported)": r"unknown language",
    "connection-typed inputs (not supported)": r"unknown type '[a-z_]+' in `input",
    "dependencies in a container (not supported)": r"installed by the local runner only",
    "unknown keys are refused (deliberate)": r"unknown key|unknown top-level key",
    "Tera would refuse it too (doc's own error)": r"is not a valid template",
}


# Pages whose "expected output" says what a run prints (keyed by page; every whole
# workspace on the page that defines the task is run).
DOC_RUNS: dict[str, tuple[Run, ...]] = {
    "examples/hello-world.md": (
        Run("hello-world", {"name": "World"}, logs=("Hello World", "HELLO WORLD"),
            source="the page's expected output"),
    ),
    "getting-started/quickstart.md": (
        Run("hello-world", logs=("Hello World", "HELLO WORLD"), source="quickstart"),
    ),
}  # fmt: skip
