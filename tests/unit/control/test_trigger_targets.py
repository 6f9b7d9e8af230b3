"""Targets named by a `trigger` annotation: read as the Trigger's consumer group on its Broker's topic."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from autoscaler import errors
from autoscaler.control.loop import GroupRead
from autoscaler.model import PartitionOffsets
from tests.unit.control.test_loop import FakeLag, FakeScaler, FakeTargets, lagging, make_loop, running, until

pytestmark = pytest.mark.looptime

GROUP = "knative-trigger-ns-billing"
TOPIC = "knative-broker-ns-default-event-broker"


@dataclass
class FakeTriggers:
    """Trigger (namespace, name) -> its spec.broker; a missing entry is a Trigger not known."""

    brokers: dict[tuple[str, str], str] = field(default_factory=dict)

    def broker_of(self, namespace: str, trigger: str) -> str | None:
        return self.brokers.get((namespace, trigger))


async def test_a_trigger_target_is_read_in_the_same_batch_as_a_kafka_group_target() -> None:
    targets, lag, triggers = FakeTargets(), FakeLag(), FakeTriggers()
    scaler = FakeScaler(targets)
    triggers.brokers[("ns", "billing")] = "default-event-broker"
    worker = targets.put("billing-worker", 0, trigger="billing", lag_per_replica="10")
    targets.put("orders", 1, kafka_group="orders", kafka_topics="orders")
    lag.partitions[GROUP] = lagging(TOPIC, [25, 0, 0])
    lag.partitions["orders"] = lagging("orders", [0])
    loop, registry = make_loop(targets, lag, scaler, triggers=triggers)

    async with running(loop):
        await until(2.5)

    assert len(lag.reads) == 3  # one read call per tick, for the one cluster
    assert {groups for _, groups in lag.reads} == {
        (GroupRead(GROUP, (TOPIC,)), GroupRead("orders", ("orders",)))
    }
    assert scaler.patches == [(worker, 3)]
    assert [e[2] for e in scaler.events] == ["ActivatedFromZero"]
    labels = {"namespace": "ns", "deployment": "billing-worker"}
    assert registry.get_sample_value("queue_autoscaler_lag", labels) == 25


async def test_a_trigger_target_scales_back_to_zero_when_its_group_has_caught_up() -> None:
    targets, lag, triggers = FakeTargets(), FakeLag(), FakeTriggers()
    scaler = FakeScaler(targets)
    triggers.brokers[("ns", "billing")] = "default-event-broker"
    worker = targets.put("billing-worker", 2, trigger="billing", scale_to_zero_after="3s")
    lag.partitions[GROUP] = lagging(TOPIC, [0, 0])
    loop, _ = make_loop(targets, lag, scaler, triggers=triggers)

    async with running(loop):
        await until(5.5)

    assert (worker, 0) in scaler.patches


async def test_a_missing_trigger_holds_replicas_with_one_warning_and_scales_once_it_appears() -> None:
    targets, lag, triggers = FakeTargets(), FakeLag(), FakeTriggers()
    scaler = FakeScaler(targets)
    worker = targets.put("billing-worker", 0, trigger="billing", lag_per_replica="10")
    lag.partitions[GROUP] = lagging(TOPIC, [10, 10, 10, 10])
    loop, _ = make_loop(targets, lag, scaler, triggers=triggers)

    async with running(loop):
        await until(5.5)
        assert scaler.patches == []
        assert lag.reads == []  # nothing to read for it: no extra request either
        warnings = [e for e in scaler.events if e[1] == "Warning"]
        assert [e[2] for e in warnings] == ["LagUnavailable"]
        assert "Trigger ns/billing not found" in warnings[0][3]
        triggers.brokers[("ns", "billing")] = "default-event-broker"
        await until(6.5)

    assert scaler.patches == [(worker, 4)]


async def test_a_controller_without_a_trigger_directory_holds_trigger_targets() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    targets.put("billing-worker", 1, trigger="billing")
    loop, _ = make_loop(targets, lag, scaler)

    async with running(loop):
        await until(2.5)

    assert scaler.patches == []
    assert [e[2] for e in scaler.events] == ["LagUnavailable"]


async def test_a_trigger_target_on_an_unreadable_cluster_is_held_like_a_kafka_group_target() -> None:
    targets, lag, triggers = FakeTargets(), FakeLag(), FakeTriggers()
    scaler = FakeScaler(targets)
    triggers.brokers[("ns", "billing")] = "default-event-broker"
    targets.put("billing-worker", 3, trigger="billing", scale_to_zero_after="1s")
    lag.partitions[GROUP] = errors.KafkaUnavailable("broker down")
    loop, _ = make_loop(targets, lag, scaler, triggers=triggers)

    async with running(loop):
        await until(10.5)

    assert scaler.patches == []
    assert [e[2] for e in scaler.events] == ["LagUnavailable"]


async def test_a_trigger_whose_dispatcher_has_not_joined_yet_does_not_wake_its_subscriber() -> None:
    targets, lag, triggers = FakeTargets(), FakeLag(), FakeTriggers()
    scaler = FakeScaler(targets)
    triggers.brokers[("ns", "billing")] = "default-event-broker"
    targets.put("billing-worker", 0, trigger="billing")
    # A Trigger just created: its group has no committed offset on any partition of a topic with records.
    lag.partitions[GROUP] = tuple(PartitionOffsets(TOPIC, p, None, 40, 0) for p in range(4))
    loop, _ = make_loop(targets, lag, scaler, triggers=triggers)

    async with running(loop):
        await until(3.5)

    assert scaler.patches == []
