"""What both Redis receivers need from redis-py: a client whose blocking reads outlive
their block time.

redis-py's default socket timeout is 5 s, the same as the receivers' default block time:
a blocking read on an idle stream or list then ends in a socket timeout instead of an
empty answer, and an idle receiver looks like a broken connection. The socket timeout is
raised above the block time here (the URL's own ``socket_timeout`` is kept when larger);
a timeout that still happens on a blocking read is treated as an idle period.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

__all__ = ["SOCKET_TIMEOUT_MARGIN_SECS", "blocking_client"]

# A blocking read returns after its block time; the socket waits this much longer.
SOCKET_TIMEOUT_MARGIN_SECS = 10.0


def blocking_client(url: str, block_secs: float, **options: Any) -> Any:
    """``redis.asyncio.from_url(url, **options)`` with a socket timeout above
    ``block_secs``. Typed Any: redis-py types its asyncio methods as T | Awaitable[T]."""
    client = aioredis.from_url(url, **options)
    kwargs = client.connection_pool.connection_kwargs
    floor = block_secs + SOCKET_TIMEOUT_MARGIN_SECS
    # Not in the kwargs: redis-py's connection default applies (5 s in redis-py 5 to 8).
    current = kwargs.get("socket_timeout") or kwargs.get("orig_socket_timeout") or 0.0
    if current < floor:
        kwargs["socket_timeout"] = floor
        if "orig_socket_timeout" in kwargs:  # redis-py >= 6 restores this one after relaxing
            kwargs["orig_socket_timeout"] = floor
    return client
