"""What the loop reads each tick for the RabbitMQ, Redis Streams and NATS JetStream targets, behind a
one-method Protocol (``cli.backlogs`` reads the servers, one batch per server and connection)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from autoscaler.model import ConsumerBacklog, QueueCounts, StreamBacklog, TargetKey
from autoscaler.policy.backlog_keys import SourcePolicies


@dataclass(frozen=True, slots=True)
class SourceFigures:
    """One target's figures of one tick; a source's figure is None when it could not be read (its
    ``*_error`` says why) or the target does not use it."""

    rabbitmq: tuple[QueueCounts, ...] | None = None
    rabbitmq_error: str | None = None
    redis: StreamBacklog | None = None
    redis_error: str | None = None
    nats: ConsumerBacklog | None = None
    nats_error: str | None = None

    def observation_fields(self) -> dict[str, Any]:
        return {
            "rabbitmq": self.rabbitmq,
            "rabbitmq_error": self.rabbitmq_error,
            "redis": self.redis,
            "redis_error": self.redis_error,
            "nats": self.nats,
            "nats_error": self.nats_error,
        }

    def errors(self, policies: SourcePolicies) -> str | None:
        """The reasons the target's own sources could not be read, joined; None when all were read."""
        found = [
            f"{name}: {error}"
            for name, used, error in (
                ("rabbitmq", policies.rabbitmq, self.rabbitmq_error),
                ("redis", policies.redis, self.redis_error),
                ("nats", policies.nats, self.nats_error),
            )
            if used is not None and error is not None
        ]
        return "; ".join(found) or None


class BacklogSource(Protocol):
    """Reads the RabbitMQ, Redis and NATS figures of many targets in one batch per server."""

    async def read(
        self, *, targets: Mapping[TargetKey, SourcePolicies]
    ) -> Mapping[TargetKey, SourceFigures]: ...


def uses_backlog_sources(policies: SourcePolicies) -> bool:
    return policies.rabbitmq is not None or policies.redis is not None or policies.nats is not None
