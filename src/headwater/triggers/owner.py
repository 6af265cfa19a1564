"""Which triggers this process serves.

One process (``headwater up``) serves every trigger: ``ServesAll``. Several servers on
one database split them: each trigger is served by the one server holding its lease
(``headwater.distributed.ownership.TriggerOwnership``), and the chores that concern the
whole workspace (retiring removed triggers, the recovery sweep) by the one holding the
janitor lease. Correctness never depends on it (trigger state is compare-and-set, jobs
have dedup keys); ownership makes sure the work is done once, by someone, within seconds.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["ServesAll", "TriggerOwner"]


class TriggerOwner(Protocol):
    def owns(self, trigger: str) -> bool:
        """Whether this process serves the trigger named ``trigger`` right now."""
        ...

    def is_janitor(self) -> bool:
        """Whether this process does the workspace-wide chores right now."""
        ...

    def took_over(self, trigger: str) -> bool:
        """True once after this process got ``trigger`` from another (dead) owner: a
        scheduler then fires the ticks the gap missed."""
        ...


class ServesAll:
    def owns(self, trigger: str) -> bool:
        return True

    def is_janitor(self) -> bool:
        return True

    def took_over(self, trigger: str) -> bool:
        return False
