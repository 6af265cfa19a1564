"""Strøm's own workspaces through headwater: the acceptance check of Strøm parity.

Takes a Strøm checkout (a work tree, or a git directory such as the mirror that
``fetch github:fremvaerk/stroem`` leaves, which is exported into a temporary folder
first) and, for every workspace file of its example workspace (``workspace/``), its
end-to-end workspace (``tests/e2e-workspace/``) and the workspace its Rust end-to-end
harness writes (``crates/stroem-e2e/tests/harness.rs``), runs ``headwater validate``
on the file alone, then ``headwater run`` of each task Strøm's tests run, with the
inputs they use, and compares the result with what those tests assert. ``--docs`` also
validates every YAML block of Strøm's documentation that is a whole workspace.

Strøm's expectations live in its shell, Rust and Playwright tests; they are restated
below (``EXPECTATIONS``) in our own words. Nothing of Strøm's is copied into this
repository: the files are read from the checkout given on the command line.

    python bench/strom_corpus.py /work/.mirror/fremvaerk+stroem/repo [--json] [--docs]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from headwater.server.json_shapes import job_json

HEADWATER = [sys.executable, "-m", "headwater"]
RUN_TIMEOUT = 90.0

sys.path.insert(0, str(Path(__file__).parent))
from strom_expectations import DOC_RUNS, EXPECTATIONS, FRAGMENT, KNOWN, FileCheck, Run  # noqa: E402


@dataclass
class RunResult:
    task: str
    input: dict[str, Any]
    matches: str  # yes / no / skipped
    why: str = ""


@dataclass
class FileResult:
    file: str
    validate: str  # ok / ok (N warnings) / N errors
    matches: str  # yes / no / (expected)
    why: str = ""
    runs: list[RunResult] = field(default_factory=list)
    first_error: str = ""


# -- the corpus ------------------------------------------------------------------------


def checkout(source: Path, into: Path) -> Path:
    """A work tree of ``source``: itself, or its HEAD exported into ``into``."""
    if (source / "workspace").is_dir():
        return source
    tree = into / "stroem"
    tree.mkdir()
    archive = subprocess.run(
        ["git", f"--git-dir={source}", "archive", "--format=tar", "HEAD"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    tar_path = into / "stroem.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(tree, filter="data")
    tar_path.unlink()
    return tree


def harness_yaml(tree: Path) -> str | None:
    harness = tree / "crates/stroem-e2e/tests/harness.rs"
    if not harness.is_file():
        return None
    m = re.search(r'WORKFLOW_YAML: &str = r#"(.*?)"#;', harness.read_text(), re.S)
    return m.group(1) if m else None


def corpus(tree: Path) -> dict[str, tuple[str, Path]]:
    """name -> (YAML text, the folder whose other files the workspace needs)."""
    files: dict[str, tuple[str, Path]] = {}
    for p in sorted((tree / "workspace/.workflows").glob("*.y*ml")):
        files[str(p.relative_to(tree))] = (p.read_text(), tree / "workspace")
    for p in sorted((tree / "tests/e2e-workspace").glob("*.y*ml")):
        files[str(p.relative_to(tree))] = (p.read_text(), tree / "tests/e2e-workspace")
    text = harness_yaml(tree)
    if text is not None:
        files["harness.rs:WORKFLOW_YAML"] = (text, tree / "crates/stroem-e2e/tests")
    return files


def workspace_of(name: str, text: str, home: Path, into: Path) -> Path:
    """A Strøm folder workspace holding only this file (and its folder's other files,
    such as ``actions/deploy.sh`` or ``data/marker.txt``)."""
    ws = into / re.sub(r"[^A-Za-z0-9_-]", "_", name)
    (ws / ".workflows").mkdir(parents=True)
    for sub in ("actions", "data"):
        if (home / sub).is_dir():
            shutil.copytree(home / sub, ws / sub)
    (ws / ".workflows" / Path(name.split(":")[0]).name).with_suffix(".yaml").write_text(text)
    return ws


def several_workspaces(
    ws: Path, others: dict[str, str], files: dict[str, tuple[str, Path]], into: Path
) -> Path:
    """A server config listing ``ws`` as ``default`` and each other corpus file as its
    own folder workspace (README "Several workspaces")."""
    lines = ["workspaces:", f"  default: {{type: folder, path: {ws}}}"]
    for name, corpus_name in others.items():
        text, home = files[corpus_name]
        other = workspace_of(f"{name}-{corpus_name}", text, home, into)
        lines.append(f"  {name}: {{type: folder, path: {other}}}")
    config = into / "server-config.yaml"
    config.write_text("\n".join(lines) + "\n")
    return config


# -- running headwater -----------------------------------------------------------------


def validate(ws: Path) -> tuple[str, list[str]]:
    """The verdict for the table, and every error message (none: it validates)."""
    proc = subprocess.run([*HEADWATER, "validate", "--json", str(ws)], capture_output=True,
                          text=True, timeout=RUN_TIMEOUT)  # fmt: skip
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        return f"crashed (rc {proc.returncode})", [proc.stderr.strip()[-300:] or "no output"]
    problems = report.get("problems", [])
    errors = [p["message"] for p in problems if p["severity"] == "error"]
    warnings = len(problems) - len(errors)
    if errors:
        return f"{len(errors)} error(s)", errors
    return ("ok" if not warnings else f"ok, {warnings} warning(s)"), []


async def _jobs_and_logs(db_url: str) -> list[dict[str, Any]]:
    from headwater.store.base import JobFilter
    from headwater.store.sql import open_store

    store = await open_store(db_url, migrate=False)
    try:
        jobs = await store.list_jobs(JobFilter(limit=100))
        out = []
        for j in jobs:
            full = await store.get_job(j.id)
            logs = await store.get_logs(j.id, limit=100_000)
            out.append({**job_json(full or j), "log": "\n".join(r.line for r in logs)})
        return out
    finally:
        await store.close()


async def _step_running(db_url: str, task: str, step: str) -> bool:
    from headwater.store.base import JobFilter
    from headwater.store.sql import open_store

    store = await open_store(db_url, migrate=False)
    try:
        for j in await store.list_jobs(JobFilter(task=task, limit=5)):
            full = await store.get_job(j.id)
            if full and any(s.name == step and s.status.value == "running" for s in full.steps):
                return True
        return False
    finally:
        await store.close()


async def _seed_state(db_url: str, workspace: str, run: Run) -> None:
    """Leave ``run``'s state as the task's current snapshot, as Strøm's upload does."""
    import io

    from headwater.store.ids import utcnow
    from headwater.store.sql import open_store
    from headwater.store.task_state import TaskStateRecord

    blob = None
    if run.state_files:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for name, content in run.state_files.items():
                data = content.encode()
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        blob = buf.getvalue()
    store = await open_store(db_url)
    try:
        snapshot = TaskStateRecord(workspace, run.task, "seeded", "upload", run.state, blob,
                                   utcnow())  # fmt: skip
        await store.save_task_state(snapshot)
    finally:
        await store.close()


def run_job(
    ws: Path, run: Run, scratch: Path
) -> tuple[dict[str, Any] | None, list[dict[str, Any]], str]:
    """(the job, every job in its database with its log, stderr of ``run``)."""
    db = scratch / "run.db"
    db.unlink(missing_ok=True)
    url = f"sqlite:///{db}"
    if run.state is not None or run.state_files:
        from headwater.workspace.loader import load_workspace

        asyncio.run(_seed_state(url, load_workspace(ws).name, run))
    argv = [*HEADWATER, "run", str(ws), run.task, "--json", "--input", json.dumps(run.input),
            "--db", url, "--artifacts-dir", str(scratch / "artifacts")]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=scratch)  # fmt: skip
    if run.interrupt is not None:
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(Exception):
                if db.exists() and asyncio.run(_step_running(url, run.task, run.interrupt)):
                    break
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
    try:
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        stderr += f"\n(timed out after {RUN_TIMEOUT:.0f}s)"
    jobs = asyncio.run(_jobs_and_logs(url)) if db.exists() else []
    job = None
    with contextlib.suppress(ValueError):
        job = json.loads(stdout)
    if job is None:  # interrupted: the job is in the database, not on stdout
        mine = [j for j in jobs if j["task"] == run.task and j["parent_job_id"] is None
                and j["source_type"] == "cli"]  # fmt: skip
        job = mine[0] if mine else None
    return job, jobs, stderr


def judge(
    run: Run, job: dict[str, Any] | None, jobs: list[dict[str, Any]], stderr: str
) -> list[str]:
    """What differs from Strøm's expectation (empty: it matches)."""
    if job is None:
        return [f"no job: {stderr.strip().splitlines()[-1] if stderr.strip() else 'no output'}"]
    why: list[str] = []
    if run.status is not None and job["status"] != run.status:
        why.append(f"status {job['status']} (want {run.status}): {str(job.get('error'))[:160]}")
    by_id = {j["id"]: j for j in jobs}
    log = by_id.get(job["id"], {}).get("log", "")
    why += [f"log lacks {s!r}" for s in run.logs if s not in log]
    steps = {s["name"]: s for s in job.get("steps", [])}
    for name, want in run.steps.items():
        got = steps.get(name, {}).get("status", "absent")
        if got != want:
            why.append(f"step {name} {got} (want {want})")
    if run.only_steps and set(steps) != set(run.steps):
        why.append(f"steps {sorted(steps)} (want {sorted(run.steps)})")
    for name, parts in run.step_error.items():
        error = str(steps.get(name, {}).get("error") or "")
        why += [f"step {name} error lacks {p!r}" for p in parts if p.lower() not in error.lower()]
    for name, subset in run.output.items():
        got = steps.get(name, {}).get("output") or {}
        if any(got.get(k) != v for k, v in subset.items()):
            why.append(f"step {name} output {got} (want {subset})")
    for key, want in run.input_kept.items():
        if job.get("input", {}).get(key) != want:
            why.append(f"job input {key}={job.get('input', {}).get(key)!r} (want {want!r})")
    if run.hook:
        hooks = [j for j in jobs if j["source_type"] == "hook"]
        if not hooks:
            why.append("no hook job")
        elif hooks[0]["status"] not in run.hook:
            why.append(f"hook job {hooks[0]['status']} (want {run.hook})")
        else:
            why += [f"hook log lacks {s!r}" for s in run.hook_logs if s not in hooks[0]["log"]]
    if run.child is not None:
        kids = [j for j in jobs if j["parent_job_id"] == job["id"]]
        if not kids or (kids[0]["task"], kids[0]["status"]) != run.child:
            why.append(f"child job {[(k['task'], k['status']) for k in kids]} (want {run.child})")
        elif [s["status"] for s in kids[0].get("steps", [])] != ["completed"]:
            why.append("child job's one step did not complete")
    names = {a.get("name") for a in job.get("artifacts", [])}
    why += [f"artifact {a} not kept" for a in run.artifacts if a not in names]
    return why


# -- the table -------------------------------------------------------------------------


def check_file(name: str, files: dict[str, tuple[str, Path]], scratch: Path) -> FileResult:
    expect = EXPECTATIONS.get(name, FileCheck())
    text, home = files[name]
    ws = workspace_of(name, text, home, scratch)
    if expect.workspaces:
        ws = several_workspaces(ws, expect.workspaces, files, scratch)
    verdict, errors = validate(ws)
    valid, first_error = not errors, (errors[0] if errors else "")
    result = FileResult(name, verdict, "yes", first_error=first_error)
    if valid and not expect.validates:
        # The feature it waited for has landed: its runs still need an entry here.
        result.why = f"validates now ({expect.why_invalid})"
    elif not valid and expect.validates:
        result.matches = "no"
        result.why = first_error
    elif not valid:
        result.matches = "expected"
        result.why = f"{expect.why_invalid}: {first_error}"
    for run in expect.runs:
        if run.skip is not None:
            result.runs.append(RunResult(run.task, run.input, "skipped", run.skip))
            continue
        if not valid:
            result.runs.append(RunResult(run.task, run.input, "skipped", "does not validate"))
            continue
        job, jobs, stderr = run_job(ws, run, scratch)
        why = judge(run, job, jobs, stderr)
        result.runs.append(RunResult(run.task, run.input, "no" if why else "yes", "; ".join(why)))
    if any(r.matches == "no" for r in result.runs):
        result.matches = "no"
        result.why = "; ".join(f"{r.task}: {r.why}" for r in result.runs if r.matches == "no")
    return result


def docs_blocks(tree: Path) -> dict[str, str]:
    """Every ```yaml block of the docs that is a whole workspace (actions or tasks)."""
    import yaml

    blocks: dict[str, str] = {}
    # The user documentation only: docs/internal and design notes describe plans.
    for md in sorted((tree / "docs/src/content/docs").rglob("*.md")):
        text = md.read_text()
        for m in re.finditer(r"```ya?ml\n(.*?)```", text, re.S):
            with contextlib.suppress(yaml.YAMLError):
                doc = yaml.safe_load(m.group(1))
                if isinstance(doc, dict) and ({"actions", "tasks"} & set(doc)):
                    line = text[: m.start()].count("\n") + 2
                    blocks[f"{md.relative_to(tree)}:{line}"] = m.group(1)
    return blocks


def classify_doc(errors: list[str]) -> tuple[str, str]:
    """(matches, why) of a docs block's validate errors."""
    if not errors:
        return "yes", ""
    real = [e for e in errors if not FRAGMENT.search(e)]
    if any("`type: approval`" in e for e in real):  # its step then also has "no `action`"
        real = [e for e in real if "no `action`" not in e]
    if not real:
        return "fragment", errors[0]
    reasons = []
    for e in real:
        label = next((k for k, rx in KNOWN.items() if re.search(rx, e)), None)
        if label is None:
            return "no", e
        reasons.append(label)
    return "known", "; ".join(dict.fromkeys(reasons))


def check_doc(name: str, text: str, scratch: Path) -> FileResult:
    ws = workspace_of(name, text, scratch, scratch)
    verdict, errors = validate(ws)
    matches, why = classify_doc(errors)
    result = FileResult(name, verdict, matches, why, first_error=errors[0] if errors else "")
    page = name.split("docs/src/content/docs/", 1)[-1].rsplit(":", 1)[0]
    for run in DOC_RUNS.get(page, ()) if not errors else ():
        if f"\n  {run.task}:" not in text:
            continue
        job, jobs, stderr = run_job(ws, run, scratch)
        why_not = judge(run, job, jobs, stderr)
        result.runs.append(RunResult(run.task, run.input, "no" if why_not else "yes",
                                     "; ".join(why_not)))  # fmt: skip
        if why_not:
            result.matches, result.why = "no", f"{run.task}: {'; '.join(why_not)}"
    return result


def print_table(results: list[FileResult]) -> None:
    rows = [("file", "validate", "tasks run", "matches Strøm", "why")]
    for r in results:
        ran = [x for x in r.runs if x.matches != "skipped"]
        done = f"{sum(x.matches == 'yes' for x in ran)}/{len(ran)}"
        skipped = len(r.runs) - len(ran)
        rows.append((r.file, r.validate, done + (f" (+{skipped} skipped)" if skipped else ""),
                     r.matches, r.why[:150]))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)), row[4])
    for r in results:
        for x in r.runs:
            if x.matches != "yes":
                print(f"  {r.file} {x.task} {json.dumps(x.input)}: {x.matches}: {x.why}")


def main() -> int:
    from headwater.logging_setup import configure_logging

    configure_logging("warning")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stroem", type=Path, help="a Strøm checkout or its git directory")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--docs", action="store_true", help="also validate the docs' YAML")
    parser.add_argument("--only", help="check only files whose name contains this")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="strom-corpus-") as tmp:
        scratch = Path(tmp)
        tree = checkout(args.stroem.resolve(), scratch)
        results = []
        files = corpus(tree)
        for name in files:
            if args.only and args.only not in name:
                continue
            work = scratch / f"w{len(results)}"
            work.mkdir()
            results.append(check_file(name, files, work))
        if args.docs:
            for name, text in docs_blocks(tree).items():
                if args.only and args.only not in name:
                    continue
                work = scratch / f"w{len(results)}"
                work.mkdir()
                results.append(check_doc(name, text, work))
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        print_table(results)
    return 0 if all(r.matches in ("yes", "expected", "fragment", "known") for r in results) else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
