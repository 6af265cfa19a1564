"""Strøm's task state is not kept yet, nor artifacts from containers: `validate`
refuses them."""

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
    ("script", "expected"),
    [
        ("cat ${STATE_DIR}/cursor", "`$STATE_DIR` is not supported yet"),
        ("cp cert.pem $STATE_OUT_DIR/", "`$STATE_OUT_DIR` is not supported yet"),
        ("ls $GLOBAL_STATE_DIR", "`$GLOBAL_STATE_DIR` is not supported yet"),
        ('echo "STATE: {\\"n\\": 1}"', "`STATE:` output lines are not supported yet"),
        ("echo 'GLOBAL_STATE: {}'", "`GLOBAL_STATE:` output lines are not supported yet"),
        ("echo {{ state.cursor }}", "`state` in templates is not supported yet"),
        ("echo {{ global_state.token }}", "`global_state` in templates is not supported yet"),
    ],
)
def test_a_script_using_state_or_artifacts_is_refused(
    tmp_path: Path, script: str, expected: str
) -> None:
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
        """,
    )
    assert len(errors) == 1, errors
    assert expected in errors[0]
    assert errors[0].startswith("action 'work': ")


def test_a_when_reading_state_is_refused(tmp_path: Path) -> None:
    # Strøm's own example: `when` is a plain expression, no {{ }}.
    errors = refusals(
        tmp_path,
        """
        actions:
          renew:
            type: script
            script: echo renew
        tasks:
          maintain-cert:
            flow:
              renew:
                action: renew
                when: "not state or state.days_remaining < 30"
        """,
    )
    assert errors == [
        "task 'maintain-cert': `state` in templates is not supported yet in headwater"
        " (Strøm's task state kept between runs)"
    ]


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


def test_artifacts_are_refused_in_a_container_action_only(tmp_path: Path) -> None:
    errors = refusals(
        tmp_path,
        """
        actions:
          local:
            type: script
            script: cp out.html "$ARTIFACTS_DIR/"
          boxed:
            type: script
            runner: docker
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
                runner: docker
                image: alpine
                script: ls $ARTIFACTS_DIR
        """,
    )
    assert errors == [
        "action 'boxed': `$ARTIFACTS_DIR` is not supported yet on the docker runner in"
        " headwater (artifacts are kept from local steps only)",
        "task 't': `$ARTIFACTS_DIR` is not supported yet on the docker runner in"
        " headwater (artifacts are kept from local steps only)",
    ]
