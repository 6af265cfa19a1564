"""The `secrets:` section (env, file(), literals) and the Redactor."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headwater.errors import TemplateError
from headwater.workspace.models import Workspace
from headwater.workspace.secrets import MASK, Redactor, check_secrets, resolve_secrets
from headwater.workspace.templating import TemplateEngine


def workspace(root: Path, **secrets: str) -> Workspace:
    return Workspace(name="w", root=root, secrets=secrets)


def test_literals_env_and_files(tmp_path: Path) -> None:
    (tmp_path / "token.txt").write_text("from-file\n")
    absolute = tmp_path / "abs.txt"
    absolute.write_text("absolute\r\n")
    ws = workspace(
        tmp_path,
        plain="hardcoded",
        from_env="{{ env.DB_PASSWORD }}",
        with_default="{{ env.NOPE | default('fallback') }}",
        from_file="{{ file('token.txt') }}",
        from_abs=f"{{{{ file('{absolute}') }}}}",
        mixed="user:{{ env.DB_PASSWORD }}",
    )
    resolved = resolve_secrets(ws, {"DB_PASSWORD": "pw"})
    assert resolved == {
        "plain": "hardcoded",
        "from_env": "pw",
        "with_default": "fallback",
        "from_file": "from-file",
        "from_abs": "absolute",
        "mixed": "user:pw",
    }


def test_a_file_keeps_inner_newlines(tmp_path: Path) -> None:
    (tmp_path / "key.pem").write_text("line1\nline2\n\n")
    resolved = resolve_secrets(workspace(tmp_path, key="{{ file('key.pem') }}"), {})
    assert resolved["key"] == "line1\nline2\n"


def test_a_missing_env_var_names_the_secret(tmp_path: Path) -> None:
    ws = workspace(tmp_path, queue_url="{{ env.QUEUE_URL }}")
    with pytest.raises(TemplateError) as info:
        resolve_secrets(ws, {"OTHER": "x"})
    message = str(info.value)
    assert "'env.QUEUE_URL' is undefined in secret 'queue_url'" in message
    assert "OTHER" not in message  # never list the environment


def test_a_missing_file_names_the_secret(tmp_path: Path) -> None:
    ws = workspace(tmp_path, cert="{{ file('missing.pem') }}")
    with pytest.raises(TemplateError, match=r"secret 'cert'.*file\('missing.pem'\)"):
        resolve_secrets(ws, {})


def test_environment_is_read_from_the_given_mapping(tmp_path: Path) -> None:
    ws = workspace(tmp_path, a="{{ env.A }}")
    assert resolve_secrets(ws, {"A": "1"}) == {"a": "1"}
    assert resolve_secrets(ws, {"A": "2"}) == {"a": "2"}


def test_redact_text_masks_every_occurrence_and_substrings() -> None:
    redactor = Redactor(["hunter2", "abc"])
    assert redactor.redact_text("pw=hunter2 again hunter2") == f"pw={MASK} again {MASK}"
    assert redactor.redact_text("xxabcxx") == f"xx{MASK}xx"
    text = "nothing here"
    assert redactor.redact_text(text) is text


def test_longest_secret_first() -> None:
    redactor = Redactor(["abc", "abcdef"])
    assert redactor.redact_text("abcdef") == MASK
    assert redactor.redact_text("abc-abcdef") == f"{MASK}-{MASK}"


def test_short_and_empty_secrets_are_not_redacted() -> None:
    redactor = Redactor(["", "ab", "x"])
    assert not redactor.active
    assert redactor.redact_text("ab x") == "ab x"


def test_regex_characters_are_literal() -> None:
    redactor = Redactor(["a.b*c", "(x)"])
    assert redactor.redact_text("a.b*c aXbc (x)") == f"{MASK} aXbc {MASK}"


def test_lines_of_a_multiline_secret_are_masked_on_their_own() -> None:
    pem = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END KEY-----"
    redactor = Redactor([pem])
    assert redactor.redact_text("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC") == MASK


def test_redact_recurses_into_json_like_data() -> None:
    redactor = Redactor(["s3cret"])
    data = {"a": "x s3cret", "b": [1, "s3cret", {"c": "s3cret!"}], "s3cret": None, "n": 5}
    assert redactor.redact(data) == {
        "a": f"x {MASK}",
        "b": [1, MASK, {"c": f"{MASK}!"}],
        MASK: None,
        "n": 5,
    }
    assert Redactor([]).redact(data) is data


@given(
    st.lists(st.text(min_size=3, max_size=12), min_size=1, max_size=4),
    st.text(max_size=20),
    st.text(max_size=20),
)
def test_no_secret_survives_redaction(secrets: list[str], before: str, after: str) -> None:
    redactor = Redactor(secrets)
    text = before + secrets[0] + after
    redacted = redactor.redact_text(text)
    # Any secret left would have to be made of mask characters or of surrounding text.
    assert secrets[0] not in redacted or secrets[0] in MASK * 3


def test_a_value_that_is_not_text_does_not_stop_the_others_being_masked() -> None:
    redactor = Redactor([12345, None, "later-secret"])  # type: ignore[list-item]
    assert redactor.redact_text("x later-secret y") == f"x {MASK} y"


def test_each_line_of_8_or_more_characters_of_a_multiline_secret_is_masked() -> None:
    redactor = Redactor(["-----BEGIN KEY-----\n12345678\nshort\n-----END KEY-----"])
    assert redactor.redact_text("leaked 12345678 and short") == f"leaked {MASK} and short"


def test_keys_that_are_not_text_are_kept_as_they_are() -> None:
    redactor = Redactor(["hunter22"])
    assert redactor.redact({1: "hunter22", "k": ["hunter22"]}) == {1: MASK, "k": [MASK]}


def test_check_reports_each_failing_secret_by_name_and_only_those(tmp_path: Path) -> None:
    (tmp_path / "ok.txt").write_text("fine\n")
    ws = workspace(
        tmp_path,
        token="{{ env.TOKEN }}",
        cert="{{ file('missing.pem') }}",
        plain="{{ file('ok.txt') }}",
        user="{{ env.USER_NAME }}",
    )
    failures = check_secrets(ws, {"USER_NAME": "me"}, TemplateEngine())
    assert set(failures) == {"token", "cert"}  # every failure, not only the first
    assert "'env.TOKEN' is undefined in secret 'token'" in failures["token"]
    assert failures["cert"].startswith("secret 'cert'") and "missing.pem" in failures["cert"]
    assert check_secrets(ws, {"USER_NAME": "me", "TOKEN": "t"}, TemplateEngine()) == {
        "cert": failures["cert"]
    }
