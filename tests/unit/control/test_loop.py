"""The control loop with tiny fakes behind its Protocols: what it patches, records and logs, and when."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from autoscaler import errors
from autoscaler.control.loop import ControlLoop, GroupRead, GroupResult
from autoscaler.model import ConcurrencyReport, PartitionOffsets, TargetConcurrency, TargetKey
from autoscaler.observability.metrics import ControllerMetrics

PREFIX = "queue-autoscaler.dev/"
T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Info:
    key: TargetKey
    uid: str
    annotations: Mapping[str, str]
    replicas: int


@dataclass
class FakeTargets:
    infos: dict[TargetKey, Info] = field(default_factory=dict)

    def snapshot(self) -> Mapping[TargetKey, Info]:
        return dict(self.infos)

    def put(self, name: str, replicas: int, **annotations: str) -> TargetKey:
        key = TargetKey("ns", name)
        full = {PREFIX + k.replace("_", "-"): v for k, v in annotations.items()}
        self.infos[key] = Info(key, f"uid-{name}", full, replicas)
        return key


@dataclass
class FakeLag:
    """Answers every group with the same partitions, or raises/returns an error."""

    partitions: dict[str, tuple[PartitionOffsets, ...] | errors.KafkaError] = field(default_factory=dict)
    reads: list[tuple[str, tuple[GroupRead, ...]]] = field(default_factory=list)

    async def read(self, *, bootstrap: str, groups: Sequence[GroupRead]) -> Mapping[GroupRead, GroupResult]:
        self.reads.append((bootstrap, tuple(groups)))
        return {g: self.partitions[g.group] for g in groups}


@dataclass
class FakeScaler:
    targets: FakeTargets
    patches: list[tuple[TargetKey, int]] = field(default_factory=list)
    events: list[tuple[TargetKey, str, str, str]] = field(default_factory=list)
    last_active: list[tuple[TargetKey, datetime | None]] = field(default_factory=list)
    block: dict[TargetKey, asyncio.Event] = field(default_factory=dict)
    gone: set[TargetKey] = field(default_factory=set)

    async def scale(self, *, target: TargetKey, replicas: int) -> int:
        if target in self.block:
            await self.block[target].wait()
        if target in self.gone:
            raise errors.TargetGone("deployment not found", status=404)
        self.patches.append((target, replicas))
        info = self.targets.infos[target]
        self.targets.infos[target] = Info(
            info.key, info.uid, info.annotations, replicas
        )  # as the watch would
        return replicas

    async def set_last_active(self, *, target: TargetKey, when: datetime | None) -> None:
        self.last_active.append((target, when))

    async def event(
        self, *, target: TargetKey, uid: str, type: str, reason: str, message: str, action: str
    ) -> None:
        self.events.append((target, type, reason, message))


def lagging(topic: str, lags: list[int]) -> tuple[PartitionOffsets, ...]:
    return tuple(
        PartitionOffsets(topic, i, committed=100, end=100 + lag, start=0) for i, lag in enumerate(lags)
    )


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def make_loop(
    targets: FakeTargets, lag: FakeLag, scaler: FakeScaler, clock: Clock | None = None
) -> tuple[ControlLoop, CollectorRegistry]:
    registry = CollectorRegistry()
    loop = ControlLoop(
        targets=targets,
        lag=lag,
        scaler=scaler,
        metrics=ControllerMetrics(registry),
        default_bootstrap="kafka:9092",
        wall_clock=clock or Clock(),
    )
    return loop, registry


async def settle(loop: ControlLoop) -> None:
    await loop.drain()
    await asyncio.sleep(0)  # let event tasks run
    await asyncio.sleep(0)


async def test_a_tick_scales_up_to_the_full_desired_count_in_one_patch_with_an_event() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    key = targets.put("w", 1, kafka_group="g", lag_per_replica="100")
    lag.partitions["g"] = lagging("t", [150, 150, 150, 0, 0, 0])
    loop, registry = make_loop(targets, lag, scaler)

    await loop.tick()
    await settle(loop)

    assert scaler.patches == [(key, 5)]
    assert [(e[1], e[2]) for e in scaler.events] == [("Normal", "ScaledUp")]
    assert "1 -> 5 replicas" in scaler.events[0][3]
    assert (
        registry.get_sample_value("queue_autoscaler_desired_replicas", {"namespace": "ns", "deployment": "w"})
        == 5
    )
    assert registry.get_sample_value("queue_autoscaler_lag", {"namespace": "ns", "deployment": "w"}) == 450


async def test_all_targets_of_one_cluster_are_read_in_one_batch_per_tick() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    for i in range(50):
        targets.put(f"w{i}", 1, kafka_group=f"g{i}")
        lag.partitions[f"g{i}"] = lagging("t", [0])
    loop, _ = make_loop(targets, lag, scaler)

    await loop.tick()

    assert len(lag.reads) == 1
    assert len(lag.reads[0][1]) == 50


async def test_no_patch_is_issued_when_the_desired_count_equals_the_current_one() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    targets.put("w", 3, kafka_group="g", lag_per_replica="10")
    lag.partitions["g"] = lagging("t", [10, 10, 10])
    loop, _ = make_loop(targets, lag, scaler)

    await loop.tick()
    await loop.tick()
    await settle(loop)

    assert scaler.patches == []
    assert scaler.events == []


async def test_invalid_annotations_produce_one_warning_per_distinct_set_and_no_patch() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    targets.put("w", 2, kafka_group="g", lag_per_replica="zero")
    loop, _ = make_loop(targets, lag, scaler)

    with capture_logs() as logs:
        for _ in range(3):
            await loop.tick()
        await settle(loop)
    targets.put("w", 2, kafka_group="g", lag_per_replica="-1")
    await loop.tick()
    await settle(loop)

    warnings = [e for e in scaler.events if e[2] == "InvalidAnnotations"]
    assert len(warnings) == 2
    assert "lag-per-replica" in warnings[0][3]
    assert "'zero'" in warnings[0][3]
    assert "'-1'" in warnings[1][3]
    assert scaler.patches == []
    assert [entry["event"] for entry in logs if entry["log_level"] == "warning"] == ["invalid annotations"]


async def test_unreadable_lag_holds_replicas_and_warns_once_per_outage() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    key = targets.put("w", 4, kafka_group="g", scale_to_zero_after="1s")
    lag.partitions["g"] = errors.KafkaUnavailable("broker down")
    clock = Clock()
    loop, _ = make_loop(targets, lag, scaler, clock)

    for _ in range(5):
        await loop.tick()
        clock.now += timedelta(seconds=10)
    await settle(loop)

    assert scaler.patches == []
    assert [e[2] for e in scaler.events] == ["LagUnavailable"]
    lag.partitions["g"] = lagging("t", [0, 0, 0, 0])
    with capture_logs() as logs:
        await loop.tick()
        await settle(loop)
    assert any(entry["event"] == "lag readable again" for entry in logs)
    assert key in loop._memory  # the target's state survived the outage


async def test_a_slow_patch_of_one_target_never_delays_another_target_or_the_next_tick() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    slow = targets.put("slow", 1, kafka_group="g1", lag_per_replica="10")
    fast = targets.put("fast", 1, kafka_group="g2", lag_per_replica="10")
    lag.partitions["g1"] = lagging("t", [30, 30, 30])
    lag.partitions["g2"] = lagging("u", [20, 20])
    scaler.block[slow] = asyncio.Event()
    loop, _ = make_loop(targets, lag, scaler)

    await loop.tick()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    await loop.tick()  # the slow patch is still in flight: no second patch is started for it

    assert scaler.patches == [(fast, 2)]
    scaler.block[slow].set()
    await settle(loop)
    assert scaler.patches == [(fast, 2), (slow, 3)]


async def test_a_poke_decides_at_once_for_an_http_target_at_zero() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    key = targets.put("web", 0, http_service="web", concurrency_per_replica="10")
    loop, _ = make_loop(targets, lag, scaler)
    loop.report(
        ConcurrencyReport(
            activator="a1", targets={key: TargetConcurrency(in_flight=0, queued=1)}, cold=frozenset({key})
        )
    )

    await loop.decide_poked()
    await settle(loop)

    assert scaler.patches == [(key, 1)]
    assert [e[2] for e in scaler.events] == ["ActivatedFromZero"]


async def test_concurrency_from_several_activators_is_summed() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    key = targets.put("web", 1, http_service="web", concurrency_per_replica="10")
    loop, _ = make_loop(targets, lag, scaler)
    loop.report(ConcurrencyReport(activator="a1", targets={key: TargetConcurrency(in_flight=15, queued=5)}))
    loop.report(ConcurrencyReport(activator="a2", targets={key: TargetConcurrency(in_flight=10, queued=0)}))

    await loop.tick()
    await settle(loop)

    assert scaler.patches == [(key, 3)]


async def test_an_idle_target_reaches_zero_after_scale_to_zero_after_and_persists_last_active() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    key = targets.put("w", 2, kafka_group="g", scale_to_zero_after="30s", scale_down_window="10s")
    lag.partitions["g"] = lagging("t", [0, 0])
    clock = Clock()
    loop, _ = make_loop(targets, lag, scaler, clock)

    await loop.tick()
    await settle(loop)
    assert scaler.last_active == [(key, T0)]
    clock.now = T0 + timedelta(seconds=29)
    await loop.tick()
    await settle(loop)
    assert (key, 0) not in scaler.patches
    clock.now = T0 + timedelta(seconds=30)
    await loop.tick()
    await settle(loop)

    assert scaler.patches[-1] == (key, 0)
    assert scaler.events[-1][2] == "ScaledToZero"


async def test_a_deleted_target_is_forgotten_and_its_metric_series_removed() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    key = targets.put("w", 1, kafka_group="g")
    lag.partitions["g"] = lagging("t", [0])
    loop, registry = make_loop(targets, lag, scaler)
    await loop.tick()
    labels = {"namespace": "ns", "deployment": "w"}
    assert registry.get_sample_value("queue_autoscaler_current_replicas", labels) == 1

    del targets.infos[key]
    await loop.tick()

    assert registry.get_sample_value("queue_autoscaler_current_replicas", labels) is None
    assert key not in loop._memory


async def test_a_target_deleted_while_its_patch_is_sent_does_not_crash_the_loop() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    key = targets.put("w", 1, kafka_group="g", lag_per_replica="1")
    lag.partitions["g"] = lagging("t", [5, 5])
    scaler.gone.add(key)
    loop, _ = make_loop(targets, lag, scaler)

    with capture_logs() as logs:
        await loop.tick()
        await settle(loop)

    assert any(entry["event"] == "target gone while scaling" for entry in logs)


async def test_a_non_leader_neither_reads_nor_patches() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    targets.put("w", 1, kafka_group="g")
    loop = ControlLoop(
        targets=targets,
        lag=lag,
        scaler=scaler,
        metrics=ControllerMetrics(CollectorRegistry()),
        default_bootstrap="kafka:9092",
        is_leader=lambda: False,
    )

    await loop.tick()

    assert lag.reads == []
    assert scaler.patches == []


@pytest.mark.parametrize("missing", ["bootstrap"])
async def test_a_kafka_target_without_any_bootstrap_is_held_with_a_warning(missing: str) -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    targets.put("w", 2, kafka_group="g")
    loop = ControlLoop(
        targets=targets,
        lag=lag,
        scaler=scaler,
        metrics=ControllerMetrics(CollectorRegistry()),
        default_bootstrap=None,
    )

    await loop.tick()
    await settle(loop)

    assert scaler.patches == []
    assert scaler.events[0][2] == "LagUnavailable"
    assert "--kafka-bootstrap" in scaler.events[0][3]


async def test_a_target_first_seen_with_invalid_annotations_keeps_its_last_active_countdown_once_fixed() -> (
    None
):
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    idle_since = T0 - timedelta(seconds=8)
    persisted = idle_since.strftime("%Y-%m-%dT%H:%M:%SZ")
    targets.put(
        "w", 1, kafka_group="g", lag_per_replica="abc", scale_to_zero_after="10s", last_active=persisted
    )
    lag.partitions["g"] = lagging("t", [0])
    clock = Clock()
    loop, _ = make_loop(targets, lag, scaler, clock)

    await loop.tick()  # e.g. a controller restarted while the annotation was bad
    await settle(loop)
    key = targets.put(
        "w", 1, kafka_group="g", lag_per_replica="10", scale_to_zero_after="10s", last_active=persisted
    )
    await loop.tick()
    await settle(loop)
    clock.now = T0 + timedelta(seconds=2)
    await loop.tick()
    await settle(loop)

    assert scaler.last_active == []  # the persisted idle start still holds: nothing to rewrite
    assert scaler.patches == [(key, 0)]  # at last-active + 10 s, not 10 s after the fix


async def test_a_decision_made_while_a_patch_is_in_flight_is_patched_right_after_it() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    key = targets.put("web", 0, http_service="web", concurrency_per_replica="10")
    scaler.block[key] = asyncio.Event()
    loop, _ = make_loop(targets, lag, scaler)
    cold = frozenset({key})
    loop.report(ConcurrencyReport("a1", {key: TargetConcurrency(in_flight=0, queued=1)}, cold=cold))
    await loop.decide_poked()  # 0 -> 1, held in flight
    await asyncio.sleep(0)
    loop.report(ConcurrencyReport("a1", {key: TargetConcurrency(in_flight=0, queued=50)}, cold=cold))
    await loop.decide_poked()  # 0 -> 5 decided while the first patch is still in flight

    scaler.block[key].set()
    await settle(loop)

    assert scaler.patches == [(key, 1), (key, 5)]
    assert [e[3].split(" (")[0] for e in scaler.events] == ["0 -> 1 replicas", "1 -> 5 replicas"]


async def test_a_scale_up_decided_while_the_last_active_write_is_in_flight_is_applied_right_after_it() -> (
    None
):
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    written = asyncio.Event()
    record = scaler.set_last_active

    async def slow_write(*, target: TargetKey, when: datetime | None) -> None:
        await written.wait()
        await record(target=target, when=when)

    scaler.set_last_active = slow_write  # type: ignore[method-assign]
    key = targets.put("w", 0, kafka_group="g", lag_per_replica="10")
    lag.partitions["g"] = lagging("t", [0])
    loop, _ = make_loop(targets, lag, scaler)

    await loop.tick()  # idle at 0: the last-active write starts and is slow
    await asyncio.sleep(0)
    lag.partitions["g"] = lagging("t", [5])
    await loop.tick()  # the lag arrives while it is in flight: 0 -> 1 is decided
    written.set()
    await settle(loop)

    assert scaler.patches == [(key, 1)]  # without a third tick
    assert scaler.last_active == [(key, T0), (key, None)]  # idle, then active again
    assert [e[2] for e in scaler.events] == ["ActivatedFromZero"]
