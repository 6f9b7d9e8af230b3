"""Targets settled at zero: not decided again while nothing they are decided on changed, decided at once
when something did."""

from __future__ import annotations

from datetime import datetime

import pytest
from prometheus_client import CollectorRegistry

from autoscaler import errors
from autoscaler.model import TargetKey
from tests.unit.control.test_loop import (
    FakeLag,
    FakeScaler,
    FakeTargets,
    lagging,
    make_loop,
    running,
    until,
)

pytestmark = pytest.mark.looptime

LABELS = {"namespace": "ns", "deployment": "w"}


def decisions(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("queue_autoscaler_decision_duration_seconds_count") or 0.0


async def test_a_target_idle_at_zero_is_decided_once_then_at_once_when_lag_arrives() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    key = targets.put("w", 0, kafka_group="g", lag_per_replica="10")
    lag.partitions["g"] = lagging("t", [0, 0])
    loop, registry = make_loop(targets, lag, scaler)

    async with running(loop):
        await until(9.5)
        assert (loop.ticks, decisions(registry)) == (10, 1)
        assert registry.get_sample_value("queue_autoscaler_desired_replicas", LABELS) == 0
        lag.partitions["g"] = lagging("t", [0, 15])
        await until(10.5)
        assert scaler.patches == [(key, 2)]  # in the very tick the lag was read

    assert [e[2] for e in scaler.events] == ["ActivatedFromZero"]


async def test_a_last_active_write_that_failed_is_retried_at_the_next_tick() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    key = targets.put("w", 0, kafka_group="g")
    lag.partitions["g"] = lagging("t", [0])
    record, failures = scaler.set_last_active, [1]

    async def flaky(*, target: TargetKey, when: datetime | None) -> None:
        if failures:
            failures.pop()
            raise errors.KubeUnavailable("apiserver unreachable")
        await record(target=target, when=when)

    scaler.set_last_active = flaky  # type: ignore[method-assign]
    loop, registry = make_loop(targets, lag, scaler)

    async with running(loop):
        await until(4.5)

    assert [k for k, _ in scaler.last_active] == [key]
    assert decisions(registry) == 2  # the failed write, its retry, then settled


async def test_a_drain_within_target_at_zero_is_decided_every_tick() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    targets.put("w", 0, kafka_group="g", drain_within="60s")
    lag.partitions["g"] = lagging("t", [0])
    loop, registry = make_loop(targets, lag, scaler)

    async with running(loop):
        await until(4.5)

    assert decisions(registry) == 5


async def test_a_new_ready_count_is_decided_on_once() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    key = targets.put("w", 0, kafka_group="g")
    lag.partitions["g"] = lagging("t", [0])
    loop, registry = make_loop(targets, lag, scaler)

    async with running(loop):
        await until(2.5)
        assert decisions(registry) == 1
        lag.partitions["g"] = lagging(
            "t",
            [0],
        )
        info = targets.infos[key]
        targets.infos[key] = type(info)(info.key, info.uid, info.annotations, 0, ready_replicas=1)
        await until(3.5)
        assert decisions(registry) == 2
        await until(5.5)

    assert decisions(registry) == 2
