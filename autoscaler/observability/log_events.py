"""The names of every structlog event the product logs, one scheme: ``area.noun.verb``.

Each area's names live in one class here, so code logs ``log.info(ControlLog.TICK_OVERRAN, ...)`` and tests
assert on the same constant with ``structlog.testing.capture_logs``; a name is never spelled twice.
"""

from __future__ import annotations

from typing import Final


class ControlLog:
    """control/: the tick, the per-target workers, decisions and patches."""

    PREFIX: Final = "control"
    TICK_OVERRAN: Final = "control.tick.overran"
    DECISION_CHANGED: Final = "control.decision.changed"
    TARGET_SCALED: Final = "control.target.scaled"
    SCALE_FAILED: Final = "control.scale.failed"
    SCALE_TARGET_GONE: Final = "control.scale.gone"
    TARGET_FORGOTTEN: Final = "control.target.forgotten"
    TARGET_DROPPED: Final = "control.target.dropped"
    ANNOTATIONS_INVALID: Final = "control.annotations.invalid"
    LAG_UNAVAILABLE: Final = "control.lag.unavailable"
    LAG_RECOVERED: Final = "control.lag.recovered"
    EVENT_FAILED: Final = "control.event.failed"
    WORKERS_DRAINING: Final = "control.workers.draining"
    REPORT_INSECURE: Final = "control.report.insecure"
    HOST_REFUSED: Final = "control.host.refused"


# ---------------------------------------------------------------------------------------------------------


class ActivatorLog:
    """activator/: routing, buffering, forwarding, reporting."""

    PREFIX: Final = "activator"
    ROUTE_UPDATED: Final = "activator.route.updated"
    ROUTE_REMOVED: Final = "activator.route.removed"
    ANNOTATIONS_INVALID: Final = "activator.annotations.invalid"
    HOST_REFUSED: Final = "activator.host.refused"
    HOST_GRANTED: Final = "activator.host.granted"
    PORT_UNRESOLVED: Final = "activator.port.unresolved"
    COLD_START_BEGAN: Final = "activator.cold_start.began"
    PROBE_PASSED: Final = "activator.probe.passed"
    PROBE_REVOKED: Final = "activator.probe.revoked"
    QUEUE_OVERFLOWED: Final = "activator.queue.overflowed"
    IN_FLIGHT_EXCEEDED: Final = "activator.in_flight.exceeded"
    ACTIVATION_TIMED_OUT: Final = "activator.activation.timed_out"
    UPSTREAM_RETRIED: Final = "activator.upstream.retried"
    UPSTREAM_FAILED: Final = "activator.upstream.failed"
    RESPONSE_CUT: Final = "activator.response.cut"
    REQUEST_MALFORMED: Final = "activator.request.malformed"
    REQUEST_FAILED: Final = "activator.request.failed"
    REQUEST_STALLED: Final = "activator.request.stalled"
    CONNECTION_REFUSED: Final = "activator.connection.refused"
    SERVER_STARTED: Final = "activator.server.started"
    DRAIN_STARTED: Final = "activator.drain.started"
    DRAIN_FINISHED: Final = "activator.drain.finished"
    DRAIN_TIMED_OUT: Final = "activator.drain.timed_out"
    SERVER_STOPPED: Final = "activator.server.stopped"
    PROCESS_STARTED: Final = "activator.process.started"
    PROCESS_EXITED: Final = "activator.process.exited"
    PROCESS_DIED: Final = "activator.process.died"
    LEADER_CHANGED: Final = "activator.leader.changed"
    LEADER_UNREADABLE: Final = "activator.leader.unreadable"


# ---------------------------------------------------------------------------------------------------------


class KafkaLog:
    """sources/kafka: batched offset reads, connections, coordinators."""

    PREFIX: Final = "kafka"
    OFFSETS_READ: Final = "kafka.offsets.read"
    METADATA_REFRESHED: Final = "kafka.metadata.refreshed"
    REQUEST_RETRIED: Final = "kafka.request.retried"
    CONNECTION_REFUSED: Final = "kafka.connection.refused"
    CONNECTION_RENEWED: Final = "kafka.connection.renewed"
    VERIFICATION_SKIPPED: Final = "kafka.verification.skipped"


# ---------------------------------------------------------------------------------------------------------


class SourceLog:
    """sources/rabbitmq, sources/redis, sources/nats: the other backlog readers."""

    PREFIX: Final = "source"
    READ_DONE: Final = "source.read.done"
    READ_RETRYING: Final = "source.read.retrying"
    READ_FAILED: Final = "source.read.failed"
    VERIFICATION_SKIPPED: Final = "source.verification.skipped"


# ---------------------------------------------------------------------------------------------------------


class KubeLog:
    """kube/: watches, scaling writes, Events, leases."""

    PREFIX: Final = "kube"
    LEADER_URL_UNREADABLE: Final = "kube.leader-url.unreadable"
    LEADER_URL_CHANGED: Final = "kube.leader-url.changed"


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
    PARTITIONS_ASSIGNED: Final = "eventing.partitions.assigned"
    PARTITIONS_REVOKED: Final = "eventing.partitions.revoked"
    ANCHOR_FAILED: Final = "eventing.anchor.failed"
    PRODUCER_REPLACED: Final = "eventing.producer.replaced"
    STATUS_WRITTEN: Final = "eventing.status.written"
    STATUS_FAILED: Final = "eventing.status.failed"


# ---------------------------------------------------------------------------------------------------------


class ProcessLog:
    """cli/ and settings: start-up, listening, stopping."""

    PREFIX: Final = "process"
