"""Action rules, template checks, secret references and step references."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from headwater.errors import Severity
from headwater.workspace import check_workspace
from headwater.workspace.loader import Report


def check(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Report:
    path = tmp_path / "ws.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return check_workspace(path, environ={} if environ is None else environ)


def found(report: Report, severity: Severity = Severity.ERROR) -> list[tuple[int, str]]:
    return [(p.line or 0, p.message) for p in report.problems if p.severity is severity]


def action(tmp_path: Path, body: str) -> Report:
    """Validate one action `a` (line 2 on) with the given body."""
    return check(tmp_path, "actions:\n  a:\n" + textwrap.indent(textwrap.dedent(body), "    "))


# -- script actions ---------------------------------------------------------------------
def test_script_needs_script_or_source(tmp_path: Path) -> None:
    assert found(action(tmp_path, "type: script\n")) == [
        (3, "action 'a': a `type: script` action needs `script` or `source`")
    ]
    assert found(action(tmp_path, "type: script\nrunner: docker\n")) == [
        (
            3,
            "action 'a': a `type: script` action needs `script` or `source` (or an `image` to"
            " run as-is with `runner: docker`)",
        )
    ]


def test_script_and_source_are_exclusive(tmp_path: Path) -> None:
    (tmp_path / "run.sh").write_text("echo\n")
    report = action(tmp_path, "type: script\nscript: echo\nsource: run.sh\n")
    assert found(report) == [(5, "action 'a': `script` and `source` are exclusive: keep one")]


def test_source_must_exist_relative_to_the_root(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "ok.py").write_text("print(1)\n")
    assert action(tmp_path, "type: script\nlanguage: python\nsource: bin/ok.py\n").valid
    report = action(tmp_path, "type: script\nsource: bin/missing.sh\n")
    assert found(report) == [
        (
            4,
            f"action 'a': source file 'bin/missing.sh' does not exist (looked for"
            f" {tmp_path / 'bin' / 'missing.sh'})",
        )
    ]


@pytest.mark.parametrize("language", ["shell", "bash", "sh"])
def test_dependencies_need_a_non_shell_language(tmp_path: Path, language: str) -> None:
    report = action(tmp_path, f"type: script\nlanguage: {language}\ndependencies: [x]\nscript: e\n")
    assert found(report) == [
        (
            5,
            "action 'a': `dependencies` need a `language` other than shell (e.g. `language:"
            " python`)",
        )
    ]
    assert action(tmp_path, "type: script\nlanguage: python\ndependencies: [x]\nscript: e\n").valid


def test_an_image_needs_a_container_runner(tmp_path: Path) -> None:
    report = action(tmp_path, "type: script\nimage: python:3\nscript: echo\n")
    assert found(report) == [
        (
            4,
            "action 'a': `image` needs `runner: docker` or `runner: pod` (or `type: docker` to"
            " run the image as-is)",
        )
    ]
    assert action(tmp_path, "type: script\nrunner: docker\nimage: python:3\nscript: e\n").valid


@pytest.mark.parametrize("kind", ["docker", "pod"])
def test_image_actions_need_an_image(tmp_path: Path, kind: str) -> None:
    assert found(action(tmp_path, f"type: {kind}\n")) == [
        (3, f"action 'a': a `type: {kind}` action needs `image`")
    ]
    assert action(tmp_path, f"type: {kind}\nimage: x:1\ncommand: [run]\n").valid


def test_image_actions_cannot_carry_a_script(tmp_path: Path) -> None:
    assert found(action(tmp_path, "type: docker\nimage: x\nscript: echo\n")) == [
        (5, "action 'a': a `type: docker` action cannot have `script`")
    ]


@pytest.mark.parametrize("runner", ["docker", "pod"])
def test_the_seeds_image_spelling_gets_a_note(tmp_path: Path, runner: str) -> None:
    report = action(tmp_path, f"type: script\nrunner: {runner}\nimage: myorg/consumer:1\n")
    assert report.valid
    assert found(report, Severity.NOTE) == [
        (
            3,
            f"action 'a': `type: script` with `runner: {runner}`, an `image` and no script runs"
            f" the image as-is; write `type: {runner}` (Strøm's spelling, same meaning)",
        )
    ]


def test_the_seed_spelling_note_on_an_inline_step(tmp_path: Path) -> None:
    report = check(
        tmp_path,
        """
        tasks:
          t:
            flow:
              poll: {type: script, runner: docker, image: "c:1"}
        """,
    )
    assert report.valid
    [(line, message)] = found(report, Severity.NOTE)
    assert line == 4 and message.startswith("step 'poll' of task 't': `type: script` with")


def test_function_actions(tmp_path: Path) -> None:
    assert action(tmp_path, 'type: function\nfunction: "pkg.mod:handler"\n').valid
    assert found(action(tmp_path, "type: function\nfunction: pkg.mod.handler\n")) == [
        (
            4,
            "action 'a': a `type: function` action needs `function: \"module:callable\"`, got"
            " 'pkg.mod.handler'",
        )
    ]
    assert found(action(tmp_path, "type: function\n")) == [
        (3, "action 'a': a `type: function` action needs `function: \"module:callable\"`")
    ]


def test_manifest_outside_pods_is_ignored_with_a_warning(tmp_path: Path) -> None:
    report = action(tmp_path, "type: docker\nimage: x\nmanifest: {spec: {}}\n")
    assert report.valid
    assert found(report, Severity.WARNING) == [
        (
            5,
            "action 'a': `manifest` is only used by pod actions (`type: pod` or `runner: pod`);"
            " ignored",
        )
    ]


# -- templates --------------------------------------------------------------------------
def test_templates_that_do_not_parse_are_errors_where_they_are(tmp_path: Path) -> None:
    report = check(
        tmp_path,
        """
        actions:
          a:
            type: script
            script: "echo {{ input.x"
            env:
              X: "{% if %}"
        tasks:
          t:
            flow:
              s:
                action: a
                when: "{{ }}"
                input:
                  nested: ["ok", {deep: "{{ 1 + }}"}]
        triggers:
          cron:
            type: scheduler
            task: t
            cron: "* * * * *"
            input: {x: "{{ oops( }}"}
        """,
    )
    assert [(line, message.split(":")[0]) for line, message in found(report)] == [
        (4, "action 'a'"),
        (6, "action 'a'"),
        (12, "step 's' of task 't'"),
        (14, "step 's' of task 't'"),
        (20, "trigger 'cron'"),
    ]
    messages = [message for _, message in found(report)]
    assert messages[0].startswith("action 'a': `script` is not a valid template: unexpected end")
    assert messages[3].startswith("step 's' of task 't': `input.nested[1].deep` is not a valid")
    assert messages[4].startswith("trigger 'cron': `input.x` is not a valid template")


def test_undefined_secrets_are_warnings(tmp_path: Path) -> None:
    report = check(
        tmp_path,
        """
        secrets:
          token: literal-value
        actions:
          a:
            type: script
            script: "curl -H {{ secret.token }} {{ secrets.tokn }}"
        tasks:
          t:
            flow:
              s: {action: a}
          handle:
            flow:
              s: {action: a}
        triggers:
          es:
            type: event_source
            task: t
            target_task: handle
            env: {QUEUE_URL: "{{ secret.queue_url }}"}
          hook: {type: webhook, task: t, secret: "{{ secret.hook_token }}"}
        """,
    )
    assert report.valid
    assert found(report, Severity.WARNING) == [
        (
            6,
            "action 'a': `script` uses secret `tokn`, which is not defined under `secrets:`"
            " (did you mean `token`?); it must be provided at run time",
        ),
        (
            19,
            "trigger 'es': `env.QUEUE_URL` uses secret `queue_url`, which is not defined"
            " under `secrets:`; it must be provided at run time",
        ),
        (
            20,
            "trigger 'hook': `secret` uses secret `hook_token`, which is not defined under"
            " `secrets:` (did you mean `token`?); it must be provided at run time",
        ),
    ]


def test_secrets_whose_env_var_is_missing_are_warnings(tmp_path: Path) -> None:
    text = """
        secrets:
          db: "{{ env.DB_PASSWORD }}"
          fallback: "{{ env.NOPE | default('x') }}"
        """
    report = check(tmp_path, text)
    assert report.valid
    assert found(report, Severity.WARNING) == [
        (
            2,
            "'env.DB_PASSWORD' is undefined in secret 'db' (it must be set where the server"
            " and workers run)",
        )
    ]
    assert check(tmp_path, text, environ={"DB_PASSWORD": "pw"}).problems == []


def test_step_references_to_steps_that_did_not_run_yet(tmp_path: Path) -> None:
    report = check(
        tmp_path,
        """
        actions:
          a: {type: script, script: echo}
        tasks:
          t:
            flow:
              say-hello: {action: a}
              first: {action: a, depends_on: [say-hello]}
              second:
                action: a
                depends_on: [first]
                input:
                  ok: "{{ say_hello.output.x }} {{ first.output.y }} {{ input.z }}"
                  bad: "{{ third.output.z }}"
                  typo: "{{ frist.output }}"
              third:
                action: a
                when: "{{ steps.second.status == 'completed' }}"
        """,
    )
    assert report.valid
    assert found(report, Severity.WARNING) == [
        (
            13,
            "step 'second' of task 't': `input.bad` reads step 'third', which is not among its"
            " depends_on; it may not have run yet (add `depends_on: [third]`)",
        ),
        (
            14,
            "step 'second' of task 't': `input.typo` reads `frist`, which is not a step of"
            " task 't' nor a template variable (input, secret, job, steps) (did you mean"
            " `first`?)",
        ),
        (
            17,
            "step 'third' of task 't': `when` reads step 'second', which is not among its"
            " depends_on; it may not have run yet (add `depends_on: [second]`)",
        ),
    ]


def test_a_step_named_like_a_context_variable(tmp_path: Path) -> None:
    report = check(
        tmp_path,
        "actions:\n  a: {type: script, script: e}\ntasks:\n  t:\n    flow:\n      input:"
        " {action: a}\n",
    )
    assert found(report, Severity.WARNING) == [
        (
            6,
            "step 'input' of task 't': step name 'input' hides the template variable `input`;"
            " later steps read its output as `steps.input.output`",
        )
    ]


def test_args_belong_to_scripts_and_are_checked_templates(tmp_path: Path) -> None:
    assert action(tmp_path, 'type: script\nscript: echo "$1"\nargs: ["{{ input.x }}", b]\n').valid
    assert found(action(tmp_path, "type: docker\nimage: x\nargs: [a]\n")) == [
        (5, "action 'a': a `type: docker` action cannot have `args`")
    ]
    (problem,) = found(action(tmp_path, "type: script\nscript: e\nargs: [ok, '{{ x | }}']\n"))
    assert problem[0] == 5
    assert problem[1].startswith("action 'a': `args[1]` is not a valid template"), problem
