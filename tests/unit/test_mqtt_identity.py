"""An MQTT message's identity: a message-id property, correlation data, else content."""

from __future__ import annotations

from headwater.triggers.receivers.mqtt.receiver import message_identity


def test_identity_prefers_the_message_id_property_then_correlation_then_content() -> None:
    assert message_identity("t", b"x", {"message-id": "m-1"}, b"c") == "m-1"
    assert message_identity("t", b"x", {}, b"\x01\x02") == "0102"
    by_content = message_identity("t", b"x", {}, None)
    assert by_content.startswith("sha256-")
    assert message_identity("t", b"x", {}, None) == by_content
    assert message_identity("u", b"x", {}, None) != by_content
