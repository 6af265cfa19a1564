from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from headwater.workspace.receiver_triggers.base import ReceiverTriggerBase

__all__ = ["SqsTrigger"]


class SqsTrigger(ReceiverTriggerBase):
    """Each message of an SQS queue becomes one job; deleted after its job committed, its
    visibility timeout extended while the batch commits."""

    secret_fields: ClassVar[tuple[str, ...]] = (
        "queue_url",
        "endpoint_url",
        "access_key_id",
        "secret_access_key",
    )

    pip_extra: ClassVar[str | None] = "sqs"
    client_modules: ClassVar[tuple[str, ...]] = ("aiobotocore", "botocore", "aiohttp")
    sdk_argument: ClassVar[str | None] = "queue_url"

    type: Literal["sqs"]
    queue_url: str
    region: str = "us-east-1"
    endpoint_url: str | None = None  # a local or compatible endpoint
    access_key_id: str | None = None  # default: the AWS credential chain
    secret_access_key: str | None = None
    wait_time_secs: int = Field(default=20, ge=0, le=20)  # long polling
    visibility_timeout_secs: int = Field(default=30, ge=1, le=43_200)
    batch_size: int = Field(default=10, ge=1, le=10)
