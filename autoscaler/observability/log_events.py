"""The names of every structlog event the product logs, one scheme: ``area.noun.verb``.

Each area's names live in one class here, so code logs ``log.info(ControlLog.TICK_OVERRAN, ...)`` and tests
assert on the same constant with ``structlog.testing.capture_logs``; a name is never spelled twice.
"""

from __future__ import annotations

from typing import Final


class ControlLog:
    """control/: the tick, the per-target workers, decisions and patches."""

    PREFIX: Final = "control"


# ---------------------------------------------------------------------------------------------------------


class ActivatorLog:
    """activator/: routing, buffering, forwarding, reporting."""

    PREFIX: Final = "activator"


# ---------------------------------------------------------------------------------------------------------


class KafkaLog:
    """sources/kafka: batched offset reads, connections, coordinators."""

    PREFIX: Final = "kafka"


# ---------------------------------------------------------------------------------------------------------


class SourceLog:
    """sources/rabbitmq, sources/redis, sources/nats: the other backlog readers."""

    PREFIX: Final = "source"
    READ_DONE: Final = "source.read.done"
    READ_RETRYING: Final = "source.read.retrying"
    READ_FAILED: Final = "source.read.failed"


# ---------------------------------------------------------------------------------------------------------


class KubeLog:
    """kube/: watches, scaling writes, Events, leases."""

    PREFIX: Final = "kube"


# ---------------------------------------------------------------------------------------------------------


class EventingLog:
    """eventing/: the broker ingress, the dispatcher, Broker and Trigger reconciling."""

    PREFIX: Final = "eventing"


# ---------------------------------------------------------------------------------------------------------


class ProcessLog:
    """cli/ and settings: start-up, listening, stopping."""

    PREFIX: Final = "process"
