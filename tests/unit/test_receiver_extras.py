"""A receiver whose client library is missing names the extra that installs it."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from headwater.errors import ConfigError
from headwater.triggers.receivers import create_receiver


@pytest.mark.parametrize(
    ("trigger_type", "module", "extra"),
    [
        ("amqp", "aio_pika", "amqp"),
        ("redis_list", "redis", "redis"),
        ("kafka", "aiokafka", "kafka"),
        ("pubsub", "google.pubsub_v1", "pubsub"),
        ("eventhubs", "azure.eventhub", "eventhubs"),
        ("pulsar", "pulsar", "pulsar"),
    ],
)
def test_a_missing_client_library_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, trigger_type: str, module: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # `import module` raises ImportError
    for name in [m for m in sys.modules if m.startswith("headwater.triggers.receivers.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ConfigError, match=rf"pip install 'headwater\[{extra}\]'"):
        create_receiver(SimpleNamespace(type=trigger_type), lambda v, where: v, None)
