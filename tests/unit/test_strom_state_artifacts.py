"""Strøm's task state and artifacts: kept from local and docker steps; `validate`
refuses the state and artifact folders in pod actions (STATE: lines work everywhere)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from headwater.errors import Severity
from headwater.workspace import check_workspace


def refusals(tmp_path: Path, text: str) -> list[str]:
    folder = tmp_path / ".workflows"
    folder.mkdir(exist_ok=True)
    (folder / "flow.yaml").write_text(textwrap.dedent(text))
    report = check_workspace(tmp_path)
    return [p.message for p in report.problems if p.severity is Severity.ERROR]


@pytest.mark.parametrize(
    "script",
    [
        "cat ${STATE_DIR}/cursor",
        "cp cert.pem $STATE_OUT_DIR/",
        "ls $GLOBAL_STATE_DIR",
        'echo "STATE: {\\"n\\": 1}"',
        "echo 'GLOBAL_STATE: {}'",
        "echo {{ state.cursor }}",
        "echo {{ global_state.token }}",
    ],
)
def test_a_local_script_using_state_is_accepted(tmp_path: Path, script: str) -> None:
    errors = refusals(
        tmp_path,
        f"""
        actions:
          work:
            type: script
            script: {script!r}
        tasks:
          t:
            flow:
              only:
                action: work
                when: "{{{{ not state or state.days_remaining < 30 }}}}"
        """,
    )
    assert errors == []


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("cat ${STATE_DIR}/cursor", "`$STATE_DIR` is not supported yet on the pod runner"),
        ("ls $GLOBAL_STATE_OUT_DIR", "`$GLOBAL_STATE_OUT_DIR` is not supported yet on the"),
    ],
)
def test_state_folders_in_a_pod_action_are_refused(
    tmp_path: Path, script: str, expected: str
) -> None:
    errors = refusals(
        tmp_path,
        f"""
        actions:
          work:
            type: script
            runner: pod
            image: alpine
            script: |
              {script}
              echo 'STATE: {{"n": 1}}'
              echo {{{{ state.n }}}}
        tasks:
          t:
            flow:
              only:
                action: work
        """,
    )
    assert len(errors) == 1, errors  # the STATE: line and the template are fine
    assert expected in errors[0]
    assert errors[0].startswith("action 'work': ")


def test_words_that_merely_contain_state_are_not_refused(tmp_path: Path) -> None:
    errors = refusals(
        tmp_path,
        """
        actions:
          work:
            type: script
            script: |
              echo "{{ input.state }} {{ 'state' }} MY_STATE_DIR_X STATE_DIRECTORY"
              echo "STATE: done"
              {% set state = 1 %}
        tasks:
          t:
            input:
              state: {type: string, default: ok}
            flow:
              only:
                action: work
                input:
                  state: "{{ input.state }}"
        """,
    )
    assert errors == []


def test_artifacts_are_refused_in_a_pod_action_only(tmp_path: Path) -> None:
    errors = refusals(
        tmp_path,
        """
        actions:
          local:
            type: script
            script: cp out.html "$ARTIFACTS_DIR/"
          docker:
            type: script
            runner: docker
            image: alpine
            script: cp out.html "$ARTIFACTS_DIR/"
          boxed:
            type: script
            runner: pod
            image: alpine
            script: cp out.html "$ARTIFACTS_DIR/"
        tasks:
          t:
            flow:
              a:
                action: local
              b:
                action: boxed
              c:
                type: script
                runner: pod
                image: alpine
                script: ls $ARTIFACTS_DIR
        """,
    )
    assert errors == [
        "action 'boxed': `$ARTIFACTS_DIR` is not supported yet on the pod runner in"
        " headwater (artifacts are kept from local and docker steps only)",
        "task 't': `$ARTIFACTS_DIR` is not supported yet on the pod runner in"
        " headwater (artifacts are kept from local and docker steps only)",
    ]
