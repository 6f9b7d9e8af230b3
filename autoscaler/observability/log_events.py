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


# ---------------------------------------------------------------------------------------------------------


class KubeLog:
    """kube/: watches, scaling writes, Events, leases."""

    PREFIX: Final = "kube"


# ---------------------------------------------------------------------------------------------------------


class EventingLog:
    """eventing/: the broker ingress, the dispatcher, Broker and Trigger reconciling."""

    PREFIX: Final = "eventing"
    TOPIC_CREATED: Final = "eventing.topic.created"
    INGRESS_PRODUCE_FAILED: Final = "eventing.produce.failed"
    INGRESS_LISTENING: Final = "eventing.ingress.listening"
    DISPATCHER_STARTED: Final = "eventing.dispatcher.started"
    TRIGGER_STARTED: Final = "eventing.trigger.started"
    TRIGGER_STOPPED: Final = "eventing.trigger.stopped"
    TRIGGER_FAILED: Final = "eventing.trigger.failed"
    DELIVERY_FAILED: Final = "eventing.delivery.failed"
    DELIVERY_DEAD_LETTERED: Final = "eventing.delivery.dead-lettered"
    DEAD_LETTER_FAILED: Final = "eventing.dead-letter.failed"
    REPLY_DROPPED: Final = "eventing.reply.dropped"
    COMMIT_FAILED: Final = "eventing.commit.failed"
    STATUS_WRITTEN: Final = "eventing.status.written"
    STATUS_FAILED: Final = "eventing.status.failed"


# ---------------------------------------------------------------------------------------------------------


class ProcessLog:
    """cli/ and settings: start-up, listening, stopping."""

    PREFIX: Final = "process"
