"""The command line takes plain option values without typer's pydantic coercion: for
every value it takes itself, the result is what typer would have produced; every other
value (invalid ones included) goes to typer, so its error messages stay."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer._coercion import build_runtime_param, resolve_type_descriptor
from typer.models import OptionInfo
from typer.testing import CliRunner

from headwater.cli.fast_params import UNHANDLED, install, quick_value


class Colour(StrEnum):
    RED = "red"
    GREEN = "green"


def typer_value(annotation: Any, info: OptionInfo, value: Any) -> Any:
    """What typer's own coercion makes of ``value``, or the exception it raises."""
    descriptor = resolve_type_descriptor(annotation, info)
    try:
        return build_runtime_param(descriptor)._coerce_value(value, None, None)  # type: ignore[arg-type]
    except Exception as exc:  # any failure: the quick path must not have taken it
        return exc


CASES = [
    (str, OptionInfo()),
    (int, OptionInfo()),
    (int, OptionInfo(min=1)),
    (int, OptionInfo(min=0, max=65535)),
    (float, OptionInfo(min=0.0)),
    (Colour, OptionInfo()),
    (list[str], OptionInfo()),
]
VALUES = st.one_of(
    st.text(max_size=12),
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(str),
    st.sampled_from(["red", "RED", "green", " 7", "7 ", "+3", "-0", "1e3", ".5", "0x10"]),
)


@pytest.mark.parametrize(("annotation", "info"), CASES)
@settings(deadline=None)  # the first example imports pydantic
@given(value=VALUES)
def test_a_value_taken_quickly_is_what_typer_makes_of_it(
    annotation: Any, info: OptionInfo, value: str
) -> None:
    arg: Any = [value, value] if annotation == list[str] else value
    quick = quick_value(annotation, arg, info)
    if quick is UNHANDLED:
        return
    expected = typer_value(annotation, info, arg)
    assert not isinstance(expected, Exception), (value, expected)
    assert quick == expected and type(quick) is type(expected)


def test_invalid_values_keep_typers_messages() -> None:
    install()
    app = typer.Typer()

    @app.command()
    def main(limit: int = typer.Option(5, min=1), colour: Colour = Colour.RED) -> None:
        typer.echo(f"{limit} {colour.value}")

    runner = CliRunner()
    assert runner.invoke(app, ["--limit", "3", "--colour", "green"]).output == "3 green\n"
    result = runner.invoke(app, ["--limit", "0"], env={"NO_COLOR": "1", "COLUMNS": "200"})
    assert result.exit_code == 2
    assert "greater than or equal to 1" in result.output
    result = runner.invoke(app, ["--colour", "blue"], env={"NO_COLOR": "1", "COLUMNS": "200"})
    assert result.exit_code == 2
    assert "'blue' is not one of" in result.output
