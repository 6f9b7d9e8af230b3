"""The English sentence rendered from a decision's numbers."""

from __future__ import annotations

from autoscaler.policy import reasons
from tests.unit.policy.builders import IDLE_LAG, Run, lagging, policy, seconds


def test_a_clamp_to_min_replicas_follows_the_action_it_changed() -> None:
    decision = Run(policy(min_replicas="3"), replicas=1).tick(lagging(5))
    assert reasons.explain(decision) == (
        "lag 5 across 1 partition at lag-per-replica 10 needs 1 replica; "
        "keeping 1 (highest count within scale-down-window 1m is 1), raised to min-replicas 3."
    )


def test_unreadable_lag_names_the_error_and_the_hold() -> None:
    decision = Run(policy(), replicas=5).tick(None, kafka_error="GROUP_AUTHORIZATION_FAILED")
    assert reasons.explain(decision) == (
        "lag unreadable (GROUP_AUTHORIZATION_FAILED); holding 5: never scaling down on missing data."
    )


def test_scale_to_zero_gives_the_idle_time_and_the_setting() -> None:
    run = Run(policy(scale_to_zero_after="30s"), replicas=2)
    run.tick(IDLE_LAG)
    decision = run.tick(IDLE_LAG, at=seconds(30))
    assert reasons.explain(decision) == (
        "lag 0 across 4 partitions at lag-per-replica 10 needs 0 replicas; "
        "activation lag 0 <= activation-lag 0 for 30s (scale-to-zero-after 30s): scaling from 2 to 0."
    )


def test_http_and_kafka_readings_are_both_explained() -> None:
    run = Run(policy(http_service="web"), replicas=0)
    decision = run.tick(lagging(0), concurrency=25)
    assert reasons.explain(decision) == (
        "lag 0 across 1 partition at lag-per-replica 10 needs 0 replicas; "
        "concurrency 25 at concurrency-per-replica 10 needs 3 replicas; "
        "activation lag 0 <= activation-lag 0 and concurrency 25 > 0: scaling from 0 to 3."
    )


def test_even_partition_distribution_says_how_it_spreads() -> None:
    decision = Run(policy(even_partition_distribution="true", kafka_topics="t"), replicas=1).tick(
        lagging(10, 10, 10, 0, 0, 0)
    )
    assert reasons.explain(decision) == (
        "lag 30 across 6 partitions at lag-per-replica 10 needs 3 replicas; scaling up from 1 to 3."
    )
    decision = Run(policy(even_partition_distribution="true", kafka_topics="t"), replicas=1).tick(
        lagging(10, 10, 10, 10, 0, 0)
    )
    assert reasons.explain(decision) == (
        "lag 40 across 6 partitions at lag-per-replica 10 needs 4 replicas, 6 to spread 6 partitions evenly; "
        "scaling up from 1 to 6."
    )


def test_durations_use_the_annotation_syntax() -> None:
    assert [reasons.duration(seconds(s)) for s in (0, 0.5, 30, 90, 299.5, 3600)] == [
        "0s",
        "500ms",
        "30s",
        "1m30s",
        "4m59.5s",
        "1h",
    ]
