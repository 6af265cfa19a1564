from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from headwater.errors import ConfigError
from headwater.workspace.receiver_triggers.base import ReceiverTriggerBase

__all__ = ["PubsubTrigger"]


class PubsubTrigger(ReceiverTriggerBase):
    """Each message of a Google Cloud Pub/Sub subscription becomes one job; acknowledged
    after its job committed, its ack deadline extended while the batch commits."""

    secret_fields: ClassVar[tuple[str, ...]] = ("service_account_key", "emulator_host")

    pip_extra: ClassVar[str | None] = "pubsub"
    client_modules: ClassVar[tuple[str, ...]] = ("google.pubsub_v1", "grpc")
    sdk_argument: ClassVar[str | None] = "subscription"

    type: Literal["pubsub"]
    # ``projects/P/subscriptions/S``, or ``S`` with ``project`` (default:
    # $GOOGLE_CLOUD_PROJECT where the receiver runs).
    subscription: str
    project: str | None = None
    # host:port of the Pub/Sub emulator (default: $PUBSUB_EMULATOR_HOST, as Google's tools).
    emulator_host: str | None = None
    # A service account key (its JSON, from a secret); default: Application Default
    # Credentials (GOOGLE_APPLICATION_CREDENTIALS, the metadata server…).
    service_account_key: str | None = None
    # A pulled message is leased to us this long (renewed while its batch commits); after
    # a crash it is delivered again when its lease runs out.
    ack_deadline_secs: int = Field(default=60, ge=2, le=600)
    # How long one pull waits for a first message (it returns at once when one arrives).
    pull_timeout_secs: float = Field(default=5.0, gt=0, le=600)
    batch_size: int = Field(default=100, ge=1, le=1_000)

    def subscription_path(self, project: str | None) -> str:
        """The full name; a short one is in ``project`` (the field, else the default)."""
        if self.subscription.startswith("projects/"):
            return self.subscription
        if not project:
            raise ConfigError(
                f"pubsub subscription {self.subscription!r} names no project: write"
                " 'projects/<project>/subscriptions/<name>', or set project"
                " (or GOOGLE_CLOUD_PROJECT)"
            )
        return f"projects/{project}/subscriptions/{self.subscription}"
