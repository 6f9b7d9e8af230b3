"""policy/rates.py: arrival and per-replica processing rates from successive readings, and sizing on them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoscaler.policy import rates
from autoscaler.policy.rates import Rates, Reading

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
DRAIN = timedelta(seconds=30)
SECOND = timedelta(seconds=1)


def feed(readings: Sequence[tuple[float, int, int, int]], state: Rates | None = None) -> Rates:
    """(seconds, added, done, consumers) readings, oldest first."""
    state = Rates() if state is None else state
    for seconds, added, done, consumers in readings:
        state = rates.observe(state, Reading(T0 + timedelta(seconds=seconds), added, done, consumers))
    return state


def steady(*, arrival: int, per_replica: int, replicas: int, backlog: int, seconds: int) -> Rates:
    """Readings every second of a target with a constant backlog, taking ``per_replica`` per replica."""
    done_rate = per_replica * replicas
    return feed(
        [
            (s, backlog + s * done_rate + s * (arrival - done_rate), s * done_rate, replicas)
            for s in range(seconds + 1)
        ]
    )


def test_with_no_history_both_rates_are_unknown_and_sizing_falls_back() -> None:
    assert rates.replicas_for(Rates(), backlog=500, drain_within=DRAIN) is None
    first = feed([(0, 500, 0, 1)])
    assert first.arrival is None
    assert first.per_replica is None
    assert rates.replicas_for(first, backlog=500, drain_within=DRAIN) is None


def test_one_replica_with_work_waiting_measures_its_rate() -> None:
    state = steady(arrival=20, per_replica=20, replicas=1, backlog=400, seconds=5)
    assert state.arrival == pytest.approx(20)
    assert state.per_replica == pytest.approx(20)
    # 20/s arriving + 400 to drain in 30 s = 33.3/s at 20/s per replica.
    assert rates.replicas_for(state, backlog=400, drain_within=DRAIN) == 2


def test_no_ready_replica_leaves_the_processing_rate_unknown() -> None:
    state = feed([(0, 100, 0, 0), (1, 200, 0, 0), (2, 300, 0, 0)])
    assert state.arrival == pytest.approx(100)
    assert state.per_replica is None
    assert rates.replicas_for(state, backlog=300, drain_within=DRAIN) is None


def test_a_jump_in_the_arrival_rate_moves_the_estimate_towards_it_smoothly() -> None:
    state = steady(arrival=10, per_replica=20, replicas=2, backlog=100, seconds=30)
    assert state.arrival == pytest.approx(10)
    last = state.last
    assert last is not None
    jumped = rates.observe(state, Reading(last.at + SECOND, last.added + 200, last.done + 40, 2))
    assert state.arrival is not None
    assert jumped.arrival is not None
    assert state.arrival < jumped.arrival < 200
    later = jumped
    for _ in range(60):
        previous = later.last
        assert previous is not None
        later = rates.observe(
            later, Reading(previous.at + SECOND, previous.added + 200, previous.done + 40, 2)
        )
    assert later.arrival == pytest.approx(200, rel=0.01)


def test_a_replica_waiting_for_work_does_not_lower_its_measured_rate() -> None:
    busy = steady(arrival=40, per_replica=20, replicas=2, backlog=100, seconds=10)
    assert busy.per_replica == pytest.approx(20)
    last = busy.last
    assert last is not None
    # Load drops to 4/s: the two replicas drain the backlog at full speed, then keep up and wait for work,
    # each doing only 2/s.
    idle = busy
    for s in range(1, 30):
        added = last.added + 4 * s
        done = min(added, last.done + 40 * s)
        idle = rates.observe(idle, Reading(last.at + s * SECOND, added, done, 2))
    assert idle.per_replica == pytest.approx(20)
    assert rates.replicas_for(idle, backlog=0, drain_within=DRAIN) == 1


def test_a_first_estimate_needs_a_replica_that_had_more_work_than_it_could_take() -> None:
    # One record woke the target; the replica did it and waited: that says nothing of its capacity.
    state = feed([(0, 1, 0, 1), (1, 1, 1, 1), (2, 3, 3, 1), (3, 5, 5, 1)])
    assert state.per_replica is None


def test_a_stuck_consumer_keeps_the_last_estimate_and_never_divides_by_zero() -> None:
    state = steady(arrival=20, per_replica=20, replicas=1, backlog=400, seconds=5)
    last = state.last
    assert last is not None
    stuck = state
    for s in range(1, 120):
        stuck = rates.observe(stuck, Reading(last.at + s * SECOND, last.added + 20 * s, last.done, 1))
    assert stuck.per_replica == pytest.approx(20)
    backlog = stuck.last.backlog if stuck.last is not None else 0
    assert backlog > 2000
    wanted = rates.replicas_for(stuck, backlog=backlog, drain_within=DRAIN)
    assert wanted is not None
    assert wanted >= 1


def test_commits_every_few_seconds_give_the_rate_over_the_whole_span() -> None:
    # 30/s processed by one replica, committed every 5 s: readings see 0, 0, 0, 0, then 150 at once.
    readings = []
    for s in range(21):
        readings.append((s, 1000 + 30 * s, 30 * (s - s % 5), 1))
    state = feed(readings)
    assert state.per_replica == pytest.approx(30)


def test_a_replica_joining_midway_never_inflates_the_rate() -> None:
    state = feed([(0, 1000, 0, 1), (1, 1000, 20, 2), (2, 1000, 60, 2)])
    assert state.per_replica is not None
    assert state.per_replica <= 20


def test_offsets_going_backwards_restart_the_arrival_rate_and_keep_the_capacity() -> None:
    state = steady(arrival=20, per_replica=20, replicas=1, backlog=400, seconds=5)
    last = state.last
    assert last is not None
    reset = rates.observe(state, Reading(last.at + SECOND, 10, 0, 1))
    assert reset.arrival is None
    assert reset.per_replica == pytest.approx(20)


def test_a_reading_not_later_than_the_previous_one_is_ignored() -> None:
    state = steady(arrival=20, per_replica=20, replicas=1, backlog=400, seconds=3)
    last = state.last
    assert last is not None
    assert rates.observe(state, Reading(last.at, last.added + 999, last.done, 1)) == state
    assert rates.observe(state, Reading(last.at - SECOND, 0, 0, 1)) == state


def test_sizing_never_answers_zero_while_work_waits_and_zero_when_there_is_none() -> None:
    known = Rates(arrival=0.0, per_replica=1000.0)
    assert rates.replicas_for(known, backlog=1, drain_within=timedelta(hours=1)) == 1
    assert rates.replicas_for(known, backlog=0, drain_within=DRAIN) == 0
    assert rates.replicas_for(Rates(arrival=0.0, per_replica=0.0), backlog=10, drain_within=DRAIN) is None
    with pytest.raises(ValueError, match="drain_within must be > 0"):
        rates.replicas_for(known, backlog=1, drain_within=timedelta(0))


@given(
    st.lists(
        st.tuples(
            st.integers(min_value=-2, max_value=5),
            st.integers(min_value=-50, max_value=500),
            st.integers(min_value=-50, max_value=500),
            st.integers(min_value=0, max_value=8),
        ),
        max_size=40,
    ),
    st.integers(min_value=0, max_value=10_000),
)
def test_any_sequence_of_readings_sizes_without_error_and_never_to_zero_with_work(
    steps: list[tuple[int, int, int, int]], backlog: int
) -> None:
    state, at, added, done = Rates(), T0, 0, 0
    for dt, more, did, consumers in steps:
        at, added, done = at + timedelta(seconds=dt), max(0, added + more), max(0, done + did)
        state = rates.observe(state, Reading(at, added, done, consumers))
        assert state.per_replica is None or state.per_replica >= 0
        wanted = rates.replicas_for(state, backlog=backlog, drain_within=DRAIN)
        assert wanted is None or (wanted >= 1 if backlog > 0 else wanted >= 0)
