"""The one URL-password hider used by receivers, the CLI and the server banner."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from headwater.url_secrets import HIDDEN, hide_password


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@cache:6379/0", "redis://•••@cache:6379/0"),
        ("postgresql://alice:p@ss@db:5432/x", "postgresql://alice:•••@db:5432/x"),
        ("nats://s3cr3t-token@nats:4222", "nats://•••@nats:4222"),  # a token as the user
        ("hw:pw@k1:9092,k2:9092", "hw:•••@k1:9092,k2:9092"),  # Kafka: no scheme
        ("redis://cache:6379/0", "redis://cache:6379/0"),
        ("sqlite:///tmp/headwater.db", "sqlite:///tmp/headwater.db"),
    ],
)
def test_known_shapes(url: str, shown: str) -> None:
    assert hide_password(url) == shown


passwords = st.text(min_size=4, max_size=40).filter(lambda p: p.strip() == p)
users = st.text(alphabet=st.characters(categories=["L", "N"]), max_size=10)


@given(
    scheme=st.sampled_from(["redis://", "amqp://", "postgresql://", "mqtt://", ""]),
    user=users,
    password=passwords,
    tail=st.sampled_from(["host:1/0", "host", "h1:9092,h2:9092", "host/db?sslmode=require"]),
)
def test_the_password_never_shows_whatever_it_holds(
    scheme: str, user: str, password: str, tail: str
) -> None:
    url = f"{scheme}{user}:{password}@{tail}"
    assume(password not in f"{scheme}{user}:{HIDDEN}@{tail}")  # not also a visible part
    shown = hide_password(url)
    assert password not in shown
    assert shown.endswith(f"@{tail}")  # still says where
