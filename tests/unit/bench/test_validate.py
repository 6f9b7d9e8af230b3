"""bench/sim/validate.py's pure parts: replica-seconds, backlog ages from sent and lag, start delays."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bench import watch
from bench.sim import validate

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_replica_seconds_hold_each_count_until_the_next_sample() -> None:
    assert validate.replica_seconds([(0.0, 0), (1.0, 2), (4.0, 3), (5.0, 0)]) == pytest.approx(2 * 3 + 3 * 1)


def test_backlog_ages_follow_the_records_from_sent_to_consumed() -> None:
    # 10 records sent at t = 0..1 s, none consumed until t = 5 s, all consumed by t = 6 s.
    sent = [(0.0, 0), (1.0, 10)]
    lag = [(1.0, 10), (5.0, 10), (6.0, 0)]
    ages = validate.backlog_ages(sent, lag, chunk=1)
    assert sum(n for _, n in ages) == 10
    assert min(age for age, _ in ages) == pytest.approx(5.0)
    assert max(age for age, _ in ages) == pytest.approx(6.0 - 0.1)
    assert validate.quantile(ages, 0.5) == pytest.approx(5.5, abs=0.1)


def test_a_lag_that_grows_back_never_counts_records_twice() -> None:
    sent = [(0.0, 0), (10.0, 100)]
    lag = [(1.0, 0), (2.0, 15), (3.0, 0)]
    ages = validate.backlog_ages(sent, lag)
    assert sum(n for _, n in ages) == 30


def test_start_delays_measure_spec_to_ready_for_each_scale_up() -> None:
    def s(t: float, spec: int, ready: int) -> watch.Sample:
        return watch.Sample(t, T0, spec, ready, 0)

    samples = [s(0, 0, 0), s(1, 2, 0), s(3, 2, 1), s(4.5, 2, 2), s(5, 3, 2), s(8, 3, 3)]
    assert validate.start_delays(samples) == [3.5, 3.0]
