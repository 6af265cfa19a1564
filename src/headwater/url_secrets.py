"""One way to show a connection URL without its password, for logs, listings and the API.

``scheme://user:password@host/...`` becomes ``scheme://user:•••@host/...``; a user part
without a password (a NATS token, an API key as the user) is hidden whole:
``scheme://•••@host``. Everything before the last ``@`` is taken as the user part, even
when a password holds a raw ``/``, ``?`` or ``@``: hiding a little too much (a query
value with an ``@``) is better than showing a password.
Also works without a scheme (``user:password@host:9092``, Kafka's bootstrap servers).
"""

from __future__ import annotations

__all__ = ["HIDDEN", "hide_password"]

HIDDEN = "•••"


def hide_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return url
    user, colon, _ = userinfo.partition(":")
    plain_user = colon and user and not any(c in user for c in "/?#")
    shown = f"{user}:{HIDDEN}" if plain_user else HIDDEN
    return f"{scheme}{sep}{shown}@{host}"
