"""The scaling decision: caps, activation, window, scale to zero, pause, missing data, HTTP, clamping."""

from __future__ import annotations

from datetime import datetime

import pytest

from autoscaler.model import (
    Cap,
    Decision,
    Observation,
    PartitionOffsets,
    Rule,
    Source,
    SourceReading,
    TopicPartition,
)
from autoscaler.policy import reasons
from autoscaler.policy.decide import DecisionState, decide
from tests.unit.policy.builders import NOW, Run, lagging, policy, seconds

IDLE = lagging(0, 0, 0, 0)


def kafka(decision: Decision) -> SourceReading:
    (reading,) = (r for r in decision.readings if r.source is Source.KAFKA)
    return reading


# Sizing and caps


def test_scales_to_the_ceiling_of_lag_over_lag_per_replica() -> None:
    decision = Run(policy(), replicas=1).tick(lagging(10, 10, 5, 0))
    assert decision.desired_replicas == 3
    assert decision.rule == Rule.SCALE_UP
    assert decision.total_lag == 25


def test_caps_replicas_at_partition_count_never_one_more() -> None:
    # KEDA caps the lag it reports at partitions × lag-per-replica and leaves the division to the HPA,
    # which can come out one above the partition count. The cap here is on the replica count itself.
    for lag_per_partition in (10, 11, 19, 21, 1000):
        decision = Run(policy(), replicas=1).tick(lagging(*[lag_per_partition] * 3))
        assert decision.desired_replicas == 3


@pytest.mark.parametrize("partitions", range(11, 41))
def test_scales_to_the_partition_count_from_one_below_it_with_many_partitions(partitions: int) -> None:
    # KEDA + HPA stall at P−1 from 11 partitions up: the capped metric is within the HPA's 10% tolerance
    # of the current count. There is no tolerance band here.
    decision = Run(policy(), replicas=partitions - 1).tick(lagging(*[500] * partitions))
    assert decision.desired_replicas == partitions


def test_allow_idle_consumers_lifts_the_partition_cap() -> None:
    decision = Run(policy(allow_idle_consumers="true"), replicas=1).tick(lagging(100, 100))
    assert decision.desired_replicas == 20


def test_limit_to_partitions_with_lag_caps_at_partitions_that_have_lag() -> None:
    scaling = policy(kafka_topics="t", limit_to_partitions_with_lag="true")
    decision = Run(scaling, replicas=1).tick(lagging(100, 0, 100, 0, 0, 0))
    assert decision.desired_replicas == 2
    assert (kafka(decision).needed, kafka(decision).cap) == (20, Cap.PARTITIONS_WITH_LAG)


@pytest.mark.parametrize(
    ("total", "expected"),
    [(1, 1), (10, 1), (11, 2), (25, 3), (35, 4), (45, 6), (61, 12), (100_000, 12)],
)
def test_even_partition_distribution_picks_the_smallest_divisor_that_covers_the_lag(
    total: int, expected: int
) -> None:
    scaling = policy(kafka_topics="t", even_partition_distribution="true")
    lags = [total // 12 + (1 if i < total % 12 else 0) for i in range(12)]
    assert Run(scaling, replicas=1).tick(lagging(*lags)).desired_replicas == expected


def test_even_partition_distribution_with_no_lag_asks_for_nothing() -> None:
    scaling = policy(kafka_topics="t", even_partition_distribution="true")
    assert Run(scaling, replicas=0).tick(lagging(*[0] * 12)).desired_replicas == 0


def test_no_partitions_means_no_lag_and_no_replicas() -> None:
    decision = Run(policy(), replicas=0).tick(())
    assert (decision.desired_replicas, decision.total_lag, decision.active) == (0, 0, False)


def test_persistent_lag_is_not_used_for_sizing() -> None:
    run = Run(policy(exclude_persistent_lag="true", scale_down_window="0s"), replicas=1)
    assert run.tick(lagging(100, 100)).desired_replicas == 2
    # Nothing was consumed: the lag is persistent, so it sizes to nothing, but keeps the target active.
    decision = run.tick(lagging(100, 100), at=seconds(1))
    assert (decision.desired_replicas, decision.total_lag, decision.active) == (1, 200, True)
    assert (kafka(decision).backlog, kafka(decision).sizing_backlog) == (200, 0)


def test_previous_committed_offsets_are_kept_only_with_exclude_persistent_lag() -> None:
    run = Run(policy(exclude_persistent_lag="true"), replicas=1)
    run.tick(lagging(5, 0))
    assert run.state.committed == ((TopicPartition("t", 0), 100), (TopicPartition("t", 1), 100))
    plain = Run(policy(), replicas=1)
    plain.tick(lagging(5, 0))
    assert plain.state.committed == ()


# Activation from zero and scaling up


def test_stays_at_zero_while_lag_is_at_most_activation_lag() -> None:
    decision = Run(policy(activation_lag="50"), replicas=0).tick(lagging(25, 25))
    assert (decision.desired_replicas, decision.rule, decision.active) == (0, Rule.HOLD, False)
    assert (kafka(decision).backlog, kafka(decision).activation) == (50, 50)


def test_activates_from_zero_to_the_full_count_at_once_above_activation_lag() -> None:
    decision = Run(policy(activation_lag="50"), replicas=0).tick(lagging(26, 25, 0, 0, 0, 0))
    assert (decision.desired_replicas, decision.rule, decision.active) == (6, Rule.ACTIVATE, True)


def test_activates_with_at_least_one_replica_when_only_persistent_lag_remains() -> None:
    scaling = policy(exclude_persistent_lag="true")
    state = DecisionState(idle_since=None, history=(), committed=((TopicPartition("t", 0), 100),))
    decision = Run(scaling, replicas=0, state=state).tick(lagging(30))
    assert (decision.desired_replicas, decision.rule) == (1, Rule.ACTIVATE)


def test_a_partition_without_committed_offset_activates_with_latest() -> None:
    offsets = (PartitionOffsets("t", 0, committed=None, end=50, start=0),)
    assert Run(policy(), replicas=0).tick(offsets).desired_replicas == 1


def test_scales_up_at_once_to_the_full_count() -> None:
    decision = Run(policy(), replicas=1).tick(lagging(*[80] * 10))
    assert (decision.desired_replicas, decision.rule) == (10, Rule.SCALE_UP)
    assert (decision.current_replicas, decision.proposed) == (1, 10)


# Scale-down window


def test_holds_within_the_scale_down_window_then_drops_to_the_highest_count_seen_in_it() -> None:
    run = Run(policy(scale_down_window="1m"), replicas=1)
    assert run.tick(lagging(*[80] * 8)).desired_replicas == 8
    assert run.tick(lagging(*[6] * 8), at=seconds(20)).desired_replicas == 8  # raw 5
    assert run.tick(lagging(*[2] * 8), at=seconds(40)).desired_replicas == 8  # raw 2
    decision = run.tick(lagging(*[2] * 8), at=seconds(61))
    # The 8 from t=0 left the window; the 5 from t=20 is the highest still in it.
    assert (decision.desired_replicas, decision.rule) == (5, Rule.SCALE_DOWN_WINDOW)
    assert (decision.window_max, decision.scale_down_window) == (5, seconds(60))
    assert run.tick(lagging(*[2] * 8), at=seconds(81)).desired_replicas == 2


def test_a_target_first_seen_holds_its_count_for_one_window_before_scaling_down() -> None:
    # After a controller restart nothing was seen yet; the running count stands in for the lost window.
    run = Run(policy(scale_down_window="1m"), replicas=6)
    decision = run.tick(lagging(10, 10))
    assert (decision.desired_replicas, decision.rule) == (6, Rule.HOLD)
    assert run.tick(lagging(10, 10), at=seconds(59)).desired_replicas == 6
    assert run.tick(lagging(10, 10), at=seconds(61)).desired_replicas == 2


def test_the_window_never_scales_up_a_target_that_was_scaled_down_by_hand() -> None:
    run = Run(policy(), replicas=1)
    run.tick(lagging(*[100] * 10))
    run.replicas = 4
    decision = run.tick(lagging(*[3] * 10), at=seconds(10))  # raw 3
    assert (decision.desired_replicas, decision.rule) == (4, Rule.HOLD)


def test_scales_down_to_one_not_zero_while_the_idle_time_is_short() -> None:
    run = Run(policy(scale_down_window="0s"), replicas=6)
    decision = run.tick(IDLE)
    assert (decision.desired_replicas, decision.rule) == (1, Rule.SCALE_DOWN_WINDOW)
    assert (decision.idle_for, decision.scale_to_zero_after) == (seconds(0), seconds(300))


def test_a_zero_scale_down_window_follows_the_raw_count_down_at_once() -> None:
    run = Run(policy(scale_down_window="0s"), replicas=8)
    assert run.tick(lagging(*[5] * 8)).desired_replicas == 4


def test_history_is_pruned_to_the_window() -> None:
    run = Run(policy(scale_down_window="30s", lag_per_replica="1", allow_idle_consumers="true"), replicas=1)
    # Raw counts falling by one every 10 s: each entry is higher than every later one, so only the window
    # removes them.
    for step in range(10):
        run.tick(lagging(10 - step), at=seconds(10 * step))
    assert run.state.history == tuple((NOW + seconds(s), 10 - s // 10) for s in (60, 70, 80, 90))


def test_history_keeps_only_entries_that_can_still_be_the_window_maximum() -> None:
    run = Run(policy(scale_down_window="60s", lag_per_replica="1", allow_idle_consumers="true"), replicas=5)
    for step, lag in enumerate((5, 3, 4, 2, 2)):
        run.tick(lagging(lag), at=seconds(step))
    # 3 is outlived by the later 4, the first 2 by the second: the maximum of any later window is the same.
    assert run.state.history == ((NOW, 5), (NOW + seconds(2), 4), (NOW + seconds(4), 2))


def test_a_window_of_steady_load_stays_one_entry_long() -> None:
    run = Run(policy(scale_down_window="300s"), replicas=3)
    for step in range(300):
        run.tick(lagging(25, 25, 25), at=seconds(step))
    assert len(run.state.history) == 1


# Scale to zero


def test_scales_to_zero_only_after_scale_to_zero_after_of_continuous_idle() -> None:
    run = Run(policy(), replicas=6)
    run.tick(IDLE)
    assert run.state.idle_since == NOW
    decision = run.tick(IDLE, at=seconds(299))
    assert decision.desired_replicas == 1
    assert decision.idle_since == NOW
    decision = run.tick(IDLE, at=seconds(300))
    assert (decision.desired_replicas, decision.rule) == (0, Rule.SCALE_TO_ZERO)
    assert (decision.idle_for, decision.scale_to_zero_after) == (seconds(300), seconds(300))


def test_scales_to_zero_directly_from_any_count() -> None:
    run = Run(policy(scale_down_window="1h"), replicas=1)
    run.tick(lagging(*[1000] * 4))
    run.tick(IDLE, at=seconds(1))
    decision = run.tick(IDLE, at=seconds(302))
    assert (run.replicas, decision.rule) == (0, Rule.SCALE_TO_ZERO)


def test_work_during_the_idle_run_restarts_the_idle_timer() -> None:
    run = Run(policy(), replicas=1)
    run.tick(IDLE)
    run.tick(lagging(1), at=seconds(200))
    assert run.state.idle_since is None
    run.tick(IDLE, at=seconds(201))
    assert run.tick(IDLE, at=seconds(400)).desired_replicas == 1
    assert run.tick(IDLE, at=seconds(501)).desired_replicas == 0


def test_lag_at_or_below_activation_lag_counts_as_idle() -> None:
    run = Run(policy(activation_lag="100"), replicas=5)
    assert run.tick(lagging(*[10] * 5)).desired_replicas == 5
    decision = run.tick(lagging(*[10] * 5), at=seconds(300))
    assert (decision.desired_replicas, decision.total_lag) == (0, 50)


def test_persistent_lag_keeps_the_target_from_scaling_to_zero() -> None:
    run = Run(policy(exclude_persistent_lag="true"), replicas=1)
    for step in range(20):
        decision = run.tick(lagging(40), at=seconds(60 * step))
    assert (decision.desired_replicas, decision.active) == (1, True)


def test_min_replicas_above_zero_keeps_the_target_from_zero() -> None:
    run = Run(policy(min_replicas="1"), replicas=3)
    run.tick(IDLE)
    assert run.tick(IDLE, at=seconds(3600)).desired_replicas == 1


def test_a_zero_scale_to_zero_after_scales_to_zero_on_the_first_idle_tick() -> None:
    assert Run(policy(scale_to_zero_after="0s"), replicas=4).tick(IDLE).desired_replicas == 0


def test_the_idle_timer_continues_from_last_active_after_a_restart() -> None:
    scaling = policy(last_active="2026-11-26T11:54:00Z")
    decision = Run(scaling, replicas=2).tick(IDLE)
    assert (decision.desired_replicas, decision.idle_since) == (
        0,
        datetime.fromisoformat("2026-11-26T11:54:00Z"),
    )


def test_an_idle_start_in_the_future_is_reset_to_now() -> None:
    state = DecisionState.initial(datetime.fromisoformat("2099-01-01T00:00:00Z"))
    run = Run(policy(), replicas=2, state=state)
    assert run.tick(IDLE).idle_since == NOW
    assert run.tick(IDLE, at=seconds(300)).desired_replicas == 0


def test_stays_at_zero_when_idle_at_zero() -> None:
    decision = Run(policy(), replicas=0).tick(IDLE, at=seconds(3600))
    assert (decision.desired_replicas, decision.rule) == (0, Rule.HOLD)


# Pause


def test_paused_replicas_wins_over_lag_and_bounds() -> None:
    scaling = policy(paused_replicas="7", max_replicas="5")
    decision = Run(scaling, replicas=1).tick(lagging(*[1000] * 20))
    assert (decision.desired_replicas, decision.rule) == (7, Rule.PAUSED_REPLICAS)


def test_paused_replicas_wins_over_idle_and_missing_data() -> None:
    run = Run(policy(paused_replicas="2"), replicas=5)
    assert run.tick(IDLE, at=seconds(3600)).desired_replicas == 2
    assert run.tick(None, at=seconds(3601), kafka_error="timeout").desired_replicas == 2


def test_paused_freezes_the_current_count() -> None:
    run = Run(policy(paused="true", min_replicas="3"), replicas=1)
    assert run.tick(lagging(*[1000] * 4)).desired_replicas == 1
    assert run.tick(IDLE, at=seconds(3600)).desired_replicas == 1
    decision = run.tick(None, at=seconds(3601))
    assert (decision.desired_replicas, decision.rule) == (1, Rule.PAUSED)


def test_paused_replicas_wins_over_paused() -> None:
    decision = Run(policy(paused="true", paused_replicas="0"), replicas=4).tick(IDLE)
    assert (decision.desired_replicas, decision.rule) == (0, Rule.PAUSED_REPLICAS)


# Missing data


def test_unreadable_lag_holds_the_current_count() -> None:
    decision = Run(policy(), replicas=5).tick(None, kafka_error="GROUP_AUTHORIZATION_FAILED")
    assert (decision.desired_replicas, decision.rule) == (5, Rule.HOLD_UNREADABLE)
    assert decision.readings == (SourceReading(Source.KAFKA, error="GROUP_AUTHORIZATION_FAILED"),)


def test_unreadable_lag_keeps_a_target_at_zero_without_fallback() -> None:
    assert Run(policy(), replicas=0).tick(None).desired_replicas == 0


def test_unreadable_lag_raises_to_fallback_replicas() -> None:
    decision = Run(policy(fallback_replicas="4"), replicas=0).tick(None, kafka_error="broker down")
    assert (decision.desired_replicas, decision.rule) == (4, Rule.FALLBACK)


def test_fallback_replicas_below_the_current_count_never_scales_down() -> None:
    decision = Run(policy(fallback_replicas="2"), replicas=6).tick(None)
    assert (decision.desired_replicas, decision.rule) == (6, Rule.HOLD_UNREADABLE)


def test_unreadable_lag_never_scales_to_zero_and_keeps_the_idle_start() -> None:
    run = Run(policy(), replicas=3)
    run.tick(IDLE)
    for step in range(1, 20):
        decision = run.tick(None, at=seconds(60 * step), kafka_error="timeout")
        assert decision.desired_replicas == 3
        assert run.state.idle_since == NOW
    # The idle run was never broken by data showing work, so it continues once lag reads again.
    assert run.tick(IDLE, at=seconds(1200)).desired_replicas == 0


def test_unreadable_lag_does_not_start_an_idle_run() -> None:
    run = Run(policy(), replicas=3)
    run.tick(lagging(50))
    run.tick(None, at=seconds(10))
    assert run.state.idle_since is None


def test_unreadable_lag_adds_nothing_to_the_window() -> None:
    run = Run(policy(), replicas=3)
    run.tick(lagging(5, 5, 5))
    before = run.state.history
    run.tick(None, at=seconds(10))
    assert run.state.history == before


def test_unreadable_lag_still_respects_max_replicas() -> None:
    decision = Run(policy(max_replicas="5"), replicas=10).tick(None)
    assert (decision.desired_replicas, decision.rule) == (5, Rule.CLAMP_MAX)


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(policy(), Observation(1, IDLE), DecisionState.initial(None), datetime(2026, 1, 1))


# HTTP


def http(**keys: str | None) -> Run:
    return Run(policy(kafka_group=None, http_service="web", **keys), replicas=0)


def test_http_sizes_on_concurrency_per_replica() -> None:
    run = http()
    run.replicas = 1
    decision = run.tick(None, concurrency=25)
    assert (decision.desired_replicas, decision.rule, decision.total_lag) == (3, Rule.SCALE_UP, 0)
    (reading,) = decision.readings
    assert (reading.source, reading.backlog, reading.per_replica, reading.needed) == (Source.HTTP, 25, 10, 3)


def test_http_activates_from_zero_on_one_request() -> None:
    decision = http().tick(None, concurrency=1)
    assert (decision.desired_replicas, decision.rule, decision.active) == (1, Rule.ACTIVATE, True)


def test_http_is_not_capped_by_partitions_only_by_max_replicas() -> None:
    decision = http(max_replicas="50").tick(None, concurrency=1000)
    assert (decision.desired_replicas, decision.rule) == (50, Rule.CLAMP_MAX)


def test_http_scales_to_zero_after_no_requests_for_scale_to_zero_after() -> None:
    run = http()
    run.tick(None, concurrency=5)
    run.tick(None, at=seconds(1), concurrency=0)
    assert run.tick(None, at=seconds(300), concurrency=0).desired_replicas == 1
    assert run.tick(None, at=seconds(301), concurrency=0).desired_replicas == 0


def test_a_request_that_started_and_ended_between_reports_is_activity() -> None:
    run = http(scale_to_zero_after="30s")
    run.replicas = 1
    run.tick(None, concurrency=0)
    assert run.state.idle_since == NOW
    observation = Observation(1, None, concurrency=0, requests_started=1, peak_concurrency=1)
    decision, run.state = decide(run.policy, observation, run.state, NOW + seconds(29))
    assert (decision.active, decision.idle_since, decision.desired_replicas) == (True, None, 1)
    assert (
        run.tick(None, at=seconds(31), concurrency=0).desired_replicas == 1
    )  # the idle run restarted at 29 s


def test_http_without_a_concurrency_report_holds() -> None:
    run = http()
    run.replicas = 3
    decision = run.tick(None, at=seconds(3600))
    assert (decision.desired_replicas, decision.rule) == (3, Rule.HOLD_UNREADABLE)
    assert decision.readings == (SourceReading(Source.HTTP, error="no concurrency report"),)


def both(replicas: int) -> Run:
    return Run(policy(http_service="web"), replicas=replicas)


def test_a_target_with_kafka_and_http_takes_the_larger_count() -> None:
    assert both(1).tick(lagging(10, 10, 0, 0, 0, 0, 0, 0), concurrency=50).desired_replicas == 5
    assert both(1).tick(lagging(*[60] * 8), concurrency=10).desired_replicas == 8


def test_a_target_with_kafka_and_http_is_active_when_either_is() -> None:
    decision = both(0).tick(IDLE, concurrency=1)
    assert (decision.desired_replicas, decision.active) == (1, True)
    decision = both(0).tick(lagging(1), concurrency=0)
    assert (decision.desired_replicas, decision.active) == (1, True)
    decision = both(0).tick(IDLE, concurrency=0)
    assert (decision.desired_replicas, decision.active) == (0, False)


def test_a_target_with_kafka_and_http_scales_to_zero_only_when_both_are_idle() -> None:
    run = both(2)
    run.tick(IDLE, concurrency=0)
    assert run.tick(IDLE, at=seconds(200), concurrency=3).idle_since is None
    run.tick(IDLE, at=seconds(201), concurrency=0)
    assert run.tick(IDLE, at=seconds(450), concurrency=0).desired_replicas == 1
    assert run.tick(IDLE, at=seconds(501), concurrency=0).desired_replicas == 0


def test_a_readable_source_may_scale_up_while_the_other_is_unreadable() -> None:
    decision = both(2).tick(None, concurrency=50, kafka_error="timeout")
    assert (decision.desired_replicas, decision.rule) == (5, Rule.SCALE_UP)


def test_a_readable_source_never_scales_down_while_the_other_is_unreadable() -> None:
    decision = both(4).tick(None, concurrency=0)
    assert (decision.desired_replicas, decision.rule) == (4, Rule.HOLD_UNREADABLE)
    decision = both(4).tick(IDLE, concurrency=None)
    assert (decision.desired_replicas, decision.rule) == (4, Rule.HOLD_UNREADABLE)


def test_a_readable_source_activates_from_zero_while_the_other_is_unreadable() -> None:
    decision = both(0).tick(None, concurrency=2)
    assert (decision.desired_replicas, decision.rule) == (1, Rule.ACTIVATE)


# Clamping


def test_clamps_up_to_min_replicas() -> None:
    decision = Run(policy(min_replicas="3"), replicas=1).tick(lagging(5))
    assert (decision.desired_replicas, decision.rule) == (3, Rule.CLAMP_MIN)
    assert (decision.proposed, decision.proposed_rule) == (1, Rule.HOLD)


def test_min_replicas_lifts_a_target_at_zero() -> None:
    assert Run(policy(min_replicas="2"), replicas=0).tick(IDLE).desired_replicas == 2


def test_clamps_down_to_max_replicas() -> None:
    decision = Run(policy(allow_idle_consumers="true", max_replicas="12"), replicas=1).tick(lagging(1000))
    assert (decision.desired_replicas, decision.rule) == (12, Rule.CLAMP_MAX)
    assert (decision.proposed, decision.proposed_rule) == (100, Rule.SCALE_UP)


def test_max_replicas_zero_keeps_even_an_active_target_at_zero() -> None:
    decision = Run(policy(max_replicas="0"), replicas=0).tick(lagging(1000))
    assert (decision.desired_replicas, decision.active) == (0, True)


# Explanation


def test_the_reason_gives_lag_lag_per_replica_and_partitions() -> None:
    decision = Run(policy(lag_per_replica="20"), replicas=1).tick(lagging(100, 100, 0))
    assert reasons.explain(decision) == (
        "lag 200 across 3 partitions at lag-per-replica 20 needs 10 replicas, capped at 3 (partitions); "
        "scaling up from 1 to 3."
    )


def test_the_reason_explains_a_hold_within_the_window() -> None:
    run = Run(policy(), replicas=1)
    run.tick(lagging(50, 50, 50, 50))
    decision = run.tick(lagging(10, 0, 0, 0), at=seconds(30))
    assert reasons.explain(decision) == (
        "lag 10 across 4 partitions at lag-per-replica 10 needs 1 replica; "
        "keeping 4 (highest count within scale-down-window 1m is 4)."
    )
