"""Strøm's nested secret values (`secret.db.password`) and the `| vals` filter."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headwater.errors import TemplateError
from headwater.workspace.loader import check_workspace
from headwater.workspace.models import Workspace
from headwater.workspace.secret_tree import flatten_secrets, secret_tree
from headwater.workspace.secrets import MASK, Redactor, resolve_secrets
from headwater.workspace.templating import TemplateEngine, build_context


def test_nested_secret_values_are_read_by_their_dotted_path(tmp_path: Path) -> None:
    ws = Workspace.model_validate(
        {
            "secrets": {
                "db": {"host": "db.internal", "password": "{{ env.DB_PW }}", "port": 5432},
                "token": "plain-token",
            }
        }
    )
    resolved = resolve_secrets(ws, {"DB_PW": "s3cret"})
    assert resolved == {
        "db.host": "db.internal",
        "db.password": "s3cret",
        "db.port": "5432",
        "token": "plain-token",
    }
    engine = TemplateEngine()
    context = build_context(input={}, secrets=resolved)
    text = "{{ secret.db.password }}@{{ secrets.db.host }}:{{ secret.db.port }} {{ secret.token }}"
    assert engine.render_str(text, context) == "s3cret@db.internal:5432 plain-token"
    # every leaf is a secret value: masked in logs
    assert Redactor(resolved.values()).redact_text("pw=s3cret") == "pw=••••••"


def test_secret_tree_rebuilds_the_nesting() -> None:
    flat = {"a.b.c": "1", "a.d": "2", "e": "3"}
    assert secret_tree(flat) == {"a": {"b": {"c": "1"}, "d": "2"}, "e": "3"}


def test_validate_accepts_nested_secrets_and_knows_their_names(tmp_path: Path) -> None:
    path = tmp_path / "ws.yaml"
    path.write_text(
        "secrets:\n  db:\n    password: hunter22\n"
        "actions:\n  a:\n    type: script\n    script: 'true'\n"
        "    env: {PW: '{{ secret.db.password }}', X: '{{ secret.db.nope }}'}\n"
        "tasks:\n  t:\n    flow: {s: {action: a}}\n"
    )
    report = check_workspace(path)
    assert report.valid, report.problems
    undefined = [p.message for p in report.problems if "not defined under `secrets:`" in p.message]
    assert len(undefined) == 1 and "`db.nope`" in undefined[0], report.problems


def _fake_vals(bin_dir: Path, script: str) -> None:
    vals = bin_dir / "vals"
    vals.write_text("#!/bin/sh\n" + script)
    vals.chmod(vals.stat().st_mode | stat.S_IEXEC)


def test_vals_resolves_ref_references_with_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in for helmfile/vals: reads {"_v": "ref+..."} and answers {"_v": value}.
    _fake_vals(
        tmp_path,
        'test "$*" = "eval -f - -o json" || exit 9\n'
        "read line\n"
        'case "$line" in *ref+echo://db-pass*) echo \'{"_v": "resolved-pw"}\';;'
        ' *) echo "no such secret" >&2; exit 1;; esac\n',
    )
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    ws = Workspace.model_validate(
        {"secrets": {"db": {"password": "{{ 'ref+echo://db-pass' | vals }}"}}}
    )
    assert resolve_secrets(ws, {}) == {"db.password": "resolved-pw"}
    engine = TemplateEngine()
    assert engine.render_str("{{ 'hello' | vals }} {{ 3 | vals }}", {}) == "hello 3"
    with pytest.raises(TemplateError, match=r"vals eval failed.*no such secret"):
        engine.render_str("{{ 'ref+echo://other' | vals }}", {})


def test_vals_without_the_cli_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no vals here
    with pytest.raises(TemplateError, match="`vals` CLI is not installed"):
        TemplateEngine().render_str("{{ 'ref+vault://x#y' | vals }}", {})


_KEYS = st.text(alphabet="abcdefghij_-", min_size=1, max_size=6)
_TREES = st.recursive(
    st.text(max_size=10),
    lambda inner: st.dictionaries(_KEYS, inner, min_size=1, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(_KEYS, _TREES, max_size=4))
def test_flattening_then_nesting_gives_the_secrets_back(secrets: dict[str, object]) -> None:
    flat = flatten_secrets(secrets, str)
    assert all(isinstance(v, str) for v in flat.values())
    assert secret_tree({k: str(v) for k, v in flat.items()}) == secrets


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
        ),
        max_leaves=20,
    ),
    st.lists(st.text(min_size=4, max_size=8), min_size=1, max_size=3),
)
def test_redacting_json_masks_the_same_as_the_walk(data: Any, secrets: list[str]) -> None:
    # Secrets with quotes, backslashes or control characters take the walk; the others
    # are found in the value's JSON text first. Either way the same values are masked.
    redactor = Redactor(secrets)
    walked = redactor._redact(data, redactor.redact_text)
    assert redactor.redact(data) == walked or walked != walked  # NaN is not equal to itself
    hidden = redactor.redact({"in": [data, "x" + secrets[0] + "y"]})
    assert MASK in hidden["in"][1]
