"""Backlog rules of RabbitMQ, Redis Streams and NATS JetStream: what was read -> one SourceReading each.

The same principle as Kafka lag: all work not yet acknowledged. Each source's count is
ceil(backlog / its per-replica threshold) and it is active when its backlog is strictly greater than its
activation threshold. A figure that could not be read (an error, or Redis's null ``lag`` when the count
needs it) is missing data: the reading carries the reason and the decision holds, never reads it as 0.
"""

from __future__ import annotations

from autoscaler.model import ConsumerBacklog, Observation, QueueCounts, Source, SourceReading, StreamBacklog
from autoscaler.policy.backlog_keys import (
    NatsCount,
    NatsPolicy,
    RabbitMQCount,
    RabbitMQOperation,
    RabbitMQPolicy,
    RedisCount,
    RedisPolicy,
    SourcePolicies,
)


def readings(policies: SourcePolicies, observation: Observation) -> tuple[SourceReading, ...]:
    """One reading per enabled source, in the order RabbitMQ, Redis, NATS."""
    found: list[SourceReading] = []
    if policies.rabbitmq is not None:
        found.append(rabbitmq(policies.rabbitmq, observation.rabbitmq, observation.rabbitmq_error))
    if policies.redis is not None:
        found.append(redis(policies.redis, observation.redis, observation.redis_error))
    if policies.nats is not None:
        found.append(nats(policies.nats, observation.nats, observation.nats_error))
    return tuple(found)


def rabbitmq_backlog(policy: RabbitMQPolicy, queues: tuple[QueueCounts, ...]) -> int:
    """Per queue ready + unacked (or ready), combined by the operation; avg rounds up, so some work is
    never 0."""
    per_queue = [q.ready + (q.unacked if policy.count is RabbitMQCount.READY_UNACKED else 0) for q in queues]
    if not per_queue:
        return 0
    if policy.operation is RabbitMQOperation.MAX:
        return max(per_queue)
    if policy.operation is RabbitMQOperation.AVG:
        return _ceil_div(sum(per_queue), len(per_queue))
    return sum(per_queue)


def rabbitmq(
    policy: RabbitMQPolicy, queues: tuple[QueueCounts, ...] | None, error: str | None
) -> SourceReading:
    if queues is None:
        return SourceReading(Source.RABBITMQ, error=error or "queues not read")
    return _reading(Source.RABBITMQ, rabbitmq_backlog(policy, queues), policy.per_replica, policy.activation)


def redis_backlog(policy: RedisPolicy, group: StreamBacklog) -> int | None:
    """The counted figure, or None when Redis could not tell it (null lag, length not read)."""
    if policy.count is RedisCount.PENDING:
        return group.pending
    if policy.count is RedisCount.LENGTH:
        return group.length
    if group.lag is None:
        return None
    return group.lag + (group.pending if policy.count is RedisCount.LAG_PENDING else 0)


def redis(policy: RedisPolicy, group: StreamBacklog | None, error: str | None) -> SourceReading:
    if group is None:
        return SourceReading(Source.REDIS, error=error or "stream group not read")
    backlog = redis_backlog(policy, group)
    if backlog is None:
        why = (
            "the stream length was not read"
            if policy.count is RedisCount.LENGTH
            else ("Redis reports no lag for the group (entries deleted inside its undelivered range)")
        )
        return SourceReading(Source.REDIS, error=why)
    return _reading(Source.REDIS, backlog, policy.per_replica, policy.activation)


def nats_backlog(policy: NatsPolicy, consumer: ConsumerBacklog) -> int:
    extra = consumer.ack_pending if policy.count is NatsCount.PENDING_ACK_PENDING else 0
    return consumer.pending + extra


def nats(policy: NatsPolicy, consumer: ConsumerBacklog | None, error: str | None) -> SourceReading:
    if consumer is None:
        return SourceReading(Source.NATS, error=error or "consumer not read")
    return _reading(Source.NATS, nats_backlog(policy, consumer), policy.per_replica, policy.activation)


def _reading(source: Source, backlog: int, per_replica: int, activation: int) -> SourceReading:
    needed = _ceil_div(backlog, per_replica)
    return SourceReading(
        source,
        backlog=backlog,
        sizing_backlog=backlog,
        per_replica=per_replica,
        needed=needed,
        replicas=needed,
        activation=activation,
    )


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)
