"""Retry: headwater's {count, backoff} and Strøm's {max_attempts, delay, backoff, jitter}."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from headwater.workspace.models import Action, RetryPolicy, RetryStrategy, Step


def test_strom_exponential_doubles_up_to_64_times_the_delay() -> None:
    policy = RetryPolicy.model_validate(
        {"max_attempts": 3, "delay": "5s", "backoff": "exponential"}
    )
    assert policy.count == 3
    assert [policy.delay(n) for n in range(1, 10)] == [5, 10, 20, 40, 80, 160, 320, 320, 320]


def test_strom_defaults_are_three_retries_30s_apart() -> None:
    policy = RetryPolicy.model_validate({"max_attempts": 2})
    assert policy.count == 2 and policy.strategy is RetryStrategy.FIXED
    assert [policy.delay(n) for n in (1, 2)] == [30.0, 30.0]
    assert RetryPolicy.model_validate({"delay": "1s"}).count == 3


def test_headwater_form_keeps_working() -> None:
    policy = RetryPolicy.model_validate({"count": 3, "backoff": "2s"})
    assert [policy.delay(n) for n in (1, 2, 3)] == [2, 4, 8]
    assert Step.model_validate({"action": "a", "retry": 2}).retry == RetryPolicy(count=2)


@given(st.floats(min_value=0, max_value=1, exclude_max=True), st.integers(1, 12))
def test_jitter_adds_at_most_a_quarter(rand: float, attempt: int) -> None:
    policy = RetryPolicy.model_validate(
        {"max_attempts": 5, "delay": "8s", "backoff": "exponential", "jitter": True}
    )
    nominal = min(8 * 64, 8 * 2 ** (attempt - 1))
    assert nominal <= policy.delay(attempt, rand=lambda: rand) <= nominal * 1.25


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"max_attempts": 0}, "from 1 to 10"),
        ({"max_attempts": 11}, "from 1 to 10"),
        ({"max_attempts": 2, "count": 2}, "use one form"),
        ({"backoff": "linear", "max_attempts": 2}, "fixed or exponential"),
        ({"max_attempts": 2, "delay": "2h"}, "at most 1h"),
        ({"max_attempts": 2, "tries": 1}, "tries"),
    ],
)
def test_bad_strom_retry_is_refused_with_the_reason(body: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RetryPolicy.model_validate(body)


@given(
    st.dictionaries(
        st.sampled_from(["max_attempts", "delay", "backoff", "jitter", "count", "max_backoff"]),
        st.one_of(
            st.integers(-5, 20), st.sampled_from(["fixed", "exponential", "5s", "x"]), st.booleans()
        ),
    )
)
def test_any_retry_mapping_parses_or_is_a_validation_error(body: dict[str, object]) -> None:
    try:
        policy = RetryPolicy.model_validate(body)
    except ValidationError:
        return
    assert policy.count >= 0 and policy.delay(1) >= 0


def test_an_action_carries_a_default_retry() -> None:
    action = Action.model_validate(
        {"type": "script", "script": "true", "retry": {"max_attempts": 2, "delay": "0s"}}
    )
    assert action.retry is not None and action.retry.count == 2 and action.retry.delay(1) == 0
