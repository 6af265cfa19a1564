"""Durable Python workflows (issue 22, seed 004's function half).

A ``@workflow`` is a function whose every ``@step`` call (and sleep, message, event,
child workflow) is recorded in the store as it completes. A run is a job of the
workflow's task: any worker that can import the function runs it, and after a crash
another one runs the function again from the top, each completed call returning its
record instead of running. See docs/workflows.md for the tables and the rules.
"""

from headwater.sdk.workflows.client import WorkflowClient
from headwater.sdk.workflows.definitions import (
    start_workflow,
    start_workflow_async,
    step,
    transaction,
    workflow,
)
from headwater.sdk.workflows.handles import WorkflowHandle
from headwater.sdk.workflows.primitives import (
    get_event,
    get_event_async,
    recv,
    recv_async,
    send,
    send_async,
    set_event,
    set_event_async,
    sleep,
    sleep_async,
)

__all__ = [
    "WorkflowClient",
    "WorkflowHandle",
    "get_event",
    "get_event_async",
    "recv",
    "recv_async",
    "send",
    "send_async",
    "set_event",
    "set_event_async",
    "sleep",
    "sleep_async",
    "start_workflow",
    "start_workflow_async",
    "step",
    "transaction",
    "workflow",
]
