"""Which process started a container, and whether it is gone (for the orphan sweep)."""

from __future__ import annotations

import os
import subprocess
import sys

from headwater.runners.identity import ProcessIdentity


def test_the_token_round_trips() -> None:
    me = ProcessIdentity.current()
    assert ProcessIdentity.parse(me.token) == me
    assert ProcessIdentity.parse("no-colons") is None
    assert ProcessIdentity.parse("host:notapid:x") is None


def test_a_living_process_is_not_gone_and_a_dead_one_is() -> None:
    me = ProcessIdentity.current()
    assert me.started, "Linux /proc gives the start time"
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child_identity = ProcessIdentity(me.host, child.pid, "")
    child.wait()
    assert child_identity.is_gone(me)
    assert not me.is_gone(me)
    boot = me.started.partition("/")[0]
    reused = ProcessIdentity(me.host, os.getppid(), f"{boot}/1")
    # The pid exists, but started at another time: the pid was reused, the owner is gone.
    assert reused.is_gone(me)
    real_parent = ProcessIdentity(me.host, os.getppid(), "")
    assert not real_parent.is_gone(me)


def test_another_host_s_processes_are_never_judged() -> None:
    me = ProcessIdentity.current()
    assert not ProcessIdentity("elsewhere", 2**22 + 1, "b/1").is_gone(me)
    assert ProcessIdentity(me.host, 2**22 + 1, "b/1").is_gone(me)
