"""headwater's Python SDK: bind functions to event sources, in code.

- ``@consumer(stream, name=…, guarantee=…)``: an outbox consumer (seed 003), run by
  ``headwater consumer run MODULE``; ``send_event(session, …)`` writes its events in the
  caller's transaction and ``headwater publisher run`` moves them to Redis Streams.
- ``@on_redis_stream``, ``@on_redis_list``, ``@on_amqp``, ``@on_mqtt``, ``@on_nats``,
  ``@on_kafka``, ``@on_sqs``, ``@on_postgres``, ``@on_sqlserver_cdc`` and
  ``@on_receiver(MyReceiver, …)``: each message becomes a durable job whose one step
  calls the function (seed 004);
  ``@on("toy", …)`` is the same for any receiver in the catalog, a plugin's included.
- ``@workflow`` / ``@step`` / ``@transaction``, ``start_workflow``, ``sleep``, ``recv`` /
  ``send``, ``get_event`` / ``set_event``, ``WorkflowClient``: durable workflows whose
  runs are jobs (``headwater.sdk.workflows``).
"""

from headwater.errors import (
    CommitInTransactionError,
    NonDeterministicWorkflowError,
    RegistrationError,
    StepFailedError,
    WorkflowError,
    WorkflowFailedError,
)
from headwater.sdk.decorators import (
    consumer,
    on,
    on_amqp,
    on_eventhubs,
    on_kafka,
    on_mqtt,
    on_mysql_cdc,
    on_nats,
    on_postgres,
    on_postgres_cdc,
    on_pubsub,
    on_pulsar,
    on_receiver,
    on_redis_list,
    on_redis_stream,
    on_sqlserver_cdc,
    on_sqs,
    receiver_defaults,
)
from headwater.sdk.events import Guarantee, StreamEvent
from headwater.sdk.outbox import asend_event, send_event
from headwater.sdk.registrations import ConsumerRegistration, ReceiverRegistration
from headwater.sdk.registry import Registry, default_registry, set_default_registry
from headwater.sdk.submitting import Submitter, asubmit, submit
from headwater.sdk.workflows import (
    WorkflowClient,
    WorkflowHandle,
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
    start_workflow,
    start_workflow_async,
    step,
    transaction,
    workflow,
)
from headwater.triggers.receivers.base import EventReceiver, ReceiverContext, ReceiverLag

__all__ = [
    "CommitInTransactionError",
    "ConsumerRegistration",
    "EventReceiver",
    "Guarantee",
    "NonDeterministicWorkflowError",
    "ReceiverContext",
    "ReceiverLag",
    "ReceiverRegistration",
    "RegistrationError",
    "Registry",
    "StepFailedError",
    "StreamEvent",
    "Submitter",
    "WorkflowClient",
    "WorkflowError",
    "WorkflowFailedError",
    "WorkflowHandle",
    "asend_event",
    "asubmit",
    "consumer",
    "default_registry",
    "get_event",
    "get_event_async",
    "on",
    "on_amqp",
    "on_eventhubs",
    "on_kafka",
    "on_mqtt",
    "on_mysql_cdc",
    "on_nats",
    "on_postgres",
    "on_postgres_cdc",
    "on_pubsub",
    "on_pulsar",
    "on_receiver",
    "on_redis_list",
    "on_redis_stream",
    "on_sqlserver_cdc",
    "on_sqs",
    "receiver_defaults",
    "recv",
    "recv_async",
    "send",
    "send_async",
    "send_event",
    "set_default_registry",
    "set_event",
    "set_event_async",
    "sleep",
    "sleep_async",
    "start_workflow",
    "start_workflow_async",
    "step",
    "submit",
    "transaction",
    "workflow",
]
