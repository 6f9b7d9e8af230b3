"""bench/sim/validate.py's pure parts: replica-seconds, backlog ages from sent and lag, start delays."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

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


def test_the_group_is_stopped_from_a_first_members_start_until_every_partition_is_assigned() -> None:
    events = [
        {"event": "starting", "pod": "a", "t": 101.0},
        {"event": "partitions assigned", "pod": "a", "t": 102.5, "partitions": [0, 1, 2, 3]},
        # b joins: a keeps consuming until its revocation, then both wait for the new assignment.
        {"event": "starting", "pod": "b", "t": 110.0},
        {"event": "partitions revoked", "pod": "a", "t": 110.8, "partitions": [0, 1, 2, 3]},
        {"event": "partitions assigned", "pod": "b", "t": 111.9, "partitions": [2, 3]},
        {"event": "partitions assigned", "pod": "a", "t": 112.0, "partitions": [0, 1]},
        # b leaves: a stops from its revocation until it holds everything again.
        {"event": "stopped", "pod": "b", "t": 130.0},
        {"event": "partitions revoked", "pod": "a", "t": 130.4, "partitions": [0, 1]},
        {"event": "partitions assigned", "pod": "a", "t": 131.0, "partitions": [0, 1, 2, 3]},
    ]
    windows = validate.stopped_windows(events, partitions=4, origin=100.0)
    assert windows == [(1.0, 2.5), (10.8, 12.0), (30.4, 31.0)]


def test_worker_events_are_read_from_the_namespaces_pod_logs_in_time_order(tmp_path: Path) -> None:
    (tmp_path / "ns_worker-1.log").write_text(
        'not json\n{"event": "starting", "pod": "worker-1", "t": 5.0}\n'
        '{"event": "started", "pod": "worker-1"}\n'
    )
    (tmp_path / "ns_worker-2.log").write_text('{"event": "starting", "pod": "worker-2", "t": 3.0}\n')
    (tmp_path / "other_worker-3.log").write_text('{"event": "starting", "pod": "worker-3", "t": 1.0}\n')
    events = validate.worker_events(tmp_path, "ns")
    assert [(e["pod"], e["t"]) for e in events] == [("worker-2", 3.0), ("worker-1", 5.0)]
