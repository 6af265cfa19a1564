"""Secret references: what a trigger's rendered input stores instead of secret values."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.workspace.secret_refs import REFERENCE_PREFIX, has_references, seal, unseal

SECRETS = {"token": "zzXYzz-token", "db": "XyXy-pass", "inner": "XyXy"}

_pieces = st.lists(
    st.one_of(st.sampled_from(sorted(SECRETS.values())), st.text("abc ./:", max_size=6)),
    max_size=4,
).map("".join)
_json: Any = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), _pieces),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text("abk", max_size=3), children)
    ),
    max_leaves=12,
)


def _dump(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_sealed_data_holds_no_secret_and_unseals_to_itself(data: Any) -> None:
    sealed = seal(data, SECRETS, "ws/hook")
    assert not any(value in _dump(sealed) for value in SECRETS.values())
    assert unseal(sealed, SECRETS, "ws/hook") == data


@settings(max_examples=200, deadline=None)
@given(_json)
def test_a_reference_unseals_only_for_its_source(data: Any) -> None:
    sealed = seal(data, SECRETS, "ws/hook")
    elsewhere = unseal(sealed, SECRETS, "ws/other")
    assert not any(value in _dump(elsewhere) for value in SECRETS.values())


def test_a_reference_unseals_only_at_its_place() -> None:
    sealed = seal({"token": "Bearer zzXYzz-token"}, SECRETS, "ws/hook")
    reference = sealed["token"].removeprefix("Bearer ")
    assert reference.startswith(REFERENCE_PREFIX) and has_references(sealed)
    moved = {"token": sealed["token"], "url": f"https://evil.example/?t={reference}"}
    assert unseal(moved, SECRETS, "ws/hook") == {
        "token": "Bearer zzXYzz-token",
        "url": f"https://evil.example/?t={reference}",
    }


def test_a_reference_whose_secret_changed_or_is_gone_is_left_as_it_is() -> None:
    sealed = seal({"t": "zzXYzz-token"}, SECRETS, "ws/hook")
    assert unseal(sealed, {**SECRETS, "token": "rotated!"}, "ws/hook") == sealed
    assert unseal(sealed, {}, "ws/hook") == sealed
    assert seal({"t": "zzXYzz-token"}, {}, "ws/hook") == {"t": "zzXYzz-token"}
