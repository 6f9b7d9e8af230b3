"""RabbitMQ, Redis Streams and NATS JetStream: their annotation keys, backlog rules and decisions."""

from __future__ import annotations

from datetime import timedelta

import pytest

from autoscaler.errors import AnnotationProblem, PolicyError
from autoscaler.model import ConsumerBacklog, Observation, QueueCounts, Rule, Source, StreamBacklog
from autoscaler.policy import reasons
from autoscaler.policy.annotations import parse
from autoscaler.policy.backlog_keys import RabbitMQCount, RabbitMQOperation, RedisCount
from autoscaler.policy.decide import DecisionState, decide
from tests.unit.policy.builders import NOW, P, policy


def problems_of(**keys: str) -> tuple[AnnotationProblem, ...]:
    with pytest.raises(PolicyError) as caught:
        parse({P + k.replace("_", "-"): v for k, v in keys.items()})
    return caught.value.problems


def q(name: str, ready: int, unacked: int) -> QueueCounts:
    return QueueCounts(name, "/", ready, unacked)


def test_each_source_key_enables_scaling_with_the_contract_defaults() -> None:
    found = parse({P + "rabbitmq-queues": "a, b,a", P + "redis-stream": "s", P + "redis-group": "g"})

    assert found is not None
    rabbit, redis = found.sources.rabbitmq, found.sources.redis
    assert rabbit is not None
    assert redis is not None
    assert (rabbit.queues, rabbit.vhost, rabbit.connection) == (("a", "b"), "/", "default")
    assert (rabbit.count, rabbit.operation) == (RabbitMQCount.READY_UNACKED, RabbitMQOperation.SUM)
    assert (rabbit.per_replica, rabbit.activation) == (20, 0)
    assert (redis.count, redis.per_replica, redis.activation) == (RedisCount.LAG_PENDING, 10, 0)
    assert found.sources.nats is None
    assert found.kafka_group is None


def test_queues_with_a_pattern_a_stream_without_a_group_and_bad_values_are_all_reported_at_once() -> None:
    problems = problems_of(
        rabbitmq_queues="a",
        rabbitmq_queue_pattern="a.*",
        redis_stream="s",
        nats_consumer="c",
        messages_per_replica="0",
        rabbitmq_count="unacked",
    )

    keys = [p.key for p in problems]
    assert keys == [
        "rabbitmq-count",
        "messages-per-replica",
        "rabbitmq-queue-pattern",
        "redis-group",
        "nats-stream",
    ]
    assert "cannot be set together with rabbitmq-queues" in problems[2].allowed
    assert problems[3] == AnnotationProblem(
        "redis-group", None, "required with redis-stream: Redis Streams scaling needs both"
    )


def test_a_queue_pattern_that_is_not_a_regular_expression_is_refused() -> None:
    (problem,) = problems_of(rabbitmq_queue_pattern="orders-(")

    assert problem.key == "rabbitmq-queue-pattern"
    assert "regular expression" in problem.allowed


def test_rabbitmq_counts_unacknowledged_messages_so_in_flight_work_is_not_scaled_down() -> None:
    target = policy(kafka_group=None, rabbitmq_queues="work", messages_per_replica="5")
    seen = Observation(current_replicas=4, partitions=None, rabbitmq=(q("work", 0, 20),))

    decision, _ = decide(target, seen, DecisionState.initial(None), NOW)

    assert decision.desired_replicas == 4
    assert decision.readings[0].backlog == 20
    assert decision.active


@pytest.mark.parametrize(
    ("operation", "count", "backlog"),
    [
        ("sum", "ready+unacked", 36),
        ("max", "ready+unacked", 25),
        ("avg", "ready+unacked", 12),
        ("sum", "ready", 21),
    ],
)
def test_rabbitmq_operations_and_counts_combine_the_matched_queues(
    operation: str, count: str, backlog: int
) -> None:
    target = policy(
        kafka_group=None, rabbitmq_queue_pattern="q.*", rabbitmq_operation=operation, rabbitmq_count=count
    )
    seen = Observation(0, None, rabbitmq=(q("q1", 20, 5), q("q2", 1, 0), q("q3", 0, 10)))

    decision, _ = decide(target, seen, DecisionState.initial(None), NOW)

    assert decision.readings[0].backlog == backlog


def test_a_null_redis_lag_holds_the_current_count_instead_of_reading_zero() -> None:
    target = policy(kafka_group=None, redis_stream="s", redis_group="g", scale_to_zero_after="0s")
    seen = Observation(3, None, redis=StreamBacklog(lag=None, pending=0))

    decision, _ = decide(target, seen, DecisionState.initial(NOW - timedelta(hours=1)), NOW)

    assert decision.desired_replicas == 3
    assert decision.rule is Rule.HOLD_UNREADABLE
    assert "redis entries unreadable (Redis reports no lag" in reasons.explain(decision)


def test_redis_counts_lag_plus_pending_or_the_one_asked_for() -> None:
    group = StreamBacklog(lag=12, pending=3, length=100)
    for count, backlog in (("lag+pending", 15), ("lag", 12), ("pending", 3), ("length", 100)):
        target = policy(kafka_group=None, redis_stream="s", redis_group="g", redis_count=count)
        decision, _ = decide(target, Observation(0, None, redis=group), DecisionState.initial(None), NOW)
        assert decision.readings[0].backlog == backlog, count


def test_a_missing_nats_consumer_holds_and_says_why() -> None:
    target = policy(kafka_group=None, nats_stream="s", nats_consumer="c")
    seen = Observation(2, None, nats_error="stream 's': consumer 'c' does not exist")

    decision, _ = decide(target, seen, DecisionState.initial(None), NOW)

    assert decision.desired_replicas == 2
    assert decision.rule is Rule.HOLD_UNREADABLE
    assert "consumer 'c' does not exist" in reasons.explain(decision)


def test_from_zero_a_backlog_above_activation_scales_to_its_ceiling_over_per_replica_in_one_step() -> None:
    target = policy(kafka_group=None, nats_stream="s", nats_consumer="c", pending_per_replica="10")
    seen = Observation(0, None, nats=ConsumerBacklog(pending=41, ack_pending=4))

    decision, _ = decide(target, seen, DecisionState.initial(None), NOW)

    assert (decision.desired_replicas, decision.rule) == (5, Rule.ACTIVATE)
    assert decision.source is Source.NATS


def test_activation_thresholds_are_strict_per_source() -> None:
    target = policy(kafka_group=None, rabbitmq_queues="w", activation_messages="10")

    at, _ = decide(target, Observation(0, None, rabbitmq=(q("w", 10, 0),)), DecisionState.initial(None), NOW)
    above, _ = decide(
        target, Observation(0, None, rabbitmq=(q("w", 11, 0),)), DecisionState.initial(None), NOW
    )

    assert (at.desired_replicas, above.desired_replicas) == (0, 1)


def test_a_target_combining_sources_takes_the_largest_count_and_names_the_winning_source() -> None:
    target = policy(
        kafka_group=None,
        rabbitmq_queues="w",
        redis_stream="s",
        redis_group="g",
        messages_per_replica="20",
        entries_per_replica="10",
    )
    seen = Observation(1, None, rabbitmq=(q("w", 40, 0),), redis=StreamBacklog(lag=55, pending=5))

    decision, _ = decide(target, seen, DecisionState.initial(None), NOW)

    assert decision.desired_replicas == 6
    assert decision.source is Source.REDIS
    assert "rabbitmq messages 40 at messages-per-replica 20 needs 2 replicas" in reasons.explain(decision)
    assert "redis entries 60 at entries-per-replica 10 needs 6 replicas" in reasons.explain(decision)
