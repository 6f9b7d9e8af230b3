"""The control loop with tiny fakes behind its Protocols: what it patches, records and logs, and when."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from autoscaler import errors
from autoscaler.control.loop import ControlLoop, GroupRead, GroupResult
from autoscaler.model import ConcurrencyReport, PartitionOffsets, TargetConcurrency, TargetKey
from autoscaler.observability.log_events import ControlLog
from autoscaler.observability.metrics import ControllerMetrics

PREFIX = "queue-autoscaler.dev/"
T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

pytestmark = pytest.mark.looptime


@dataclass(frozen=True)
class Info:
    key: TargetKey
    uid: str
    annotations: Mapping[str, str]
    replicas: int
    ready_replicas: int = 0
    created: datetime | None = None


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


def wall_clock() -> datetime:
    """The wall clock follows the fake loop clock: T0 at loop time 0."""
    return T0 + timedelta(seconds=asyncio.get_running_loop().time())


def make_loop(
    targets: FakeTargets, lag: FakeLag, scaler: FakeScaler, **options: Any
) -> tuple[ControlLoop, CollectorRegistry]:
    registry = CollectorRegistry()
    loop = ControlLoop(
        targets=targets,
        lag=lag,
        scaler=scaler,
        metrics=ControllerMetrics(registry),
        default_bootstrap=options.pop("default_bootstrap", "kafka:9092"),
        wall_clock=wall_clock,
        **options,
    )
    return loop, registry


@contextlib.asynccontextmanager
async def running(loop: ControlLoop) -> AsyncIterator[asyncio.Task[None]]:
    """``loop.run()`` as a task (its first tick at loop time 0), cancelled and awaited at the end."""
    task = asyncio.create_task(loop.run(), name="control loop")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(moment: float) -> None:
    """Lets the fake loop clock run to ``moment`` seconds (ticks fall on whole seconds)."""
    await asyncio.sleep(moment - asyncio.get_running_loop().time())


# --- what one tick does ---------------------------------------------------------------------------------


async def test_a_tick_scales_up_to_the_full_desired_count_in_one_patch_with_an_event() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    key = targets.put("w", 1, kafka_group="g", lag_per_replica="100")
    lag.partitions["g"] = lagging("t", [150, 150, 150, 0, 0, 0])
    loop, registry = make_loop(targets, lag, scaler)

    async with running(loop):
        await until(0.5)

    assert scaler.patches == [(key, 5)]
    assert [(e[1], e[2]) for e in scaler.events] == [("Normal", "ScaledUp")]
    assert scaler.events[0][3].startswith("1 -> 5 replicas (scale-up): ")
    labels = {"namespace": "ns", "deployment": "w"}
    assert registry.get_sample_value("queue_autoscaler_desired_replicas", labels) == 5
    assert registry.get_sample_value("queue_autoscaler_lag", labels) == 450


async def test_all_targets_of_one_cluster_are_read_in_one_batch_per_tick() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    for i in range(50):
        targets.put(f"w{i}", 1, kafka_group=f"g{i}")
        lag.partitions[f"g{i}"] = lagging("t", [0])
    loop, _ = make_loop(targets, lag, scaler)

    async with running(loop):
        await until(0.5)

    assert len(lag.reads) == 1
    assert len(lag.reads[0][1]) == 50


async def test_no_patch_is_issued_when_the_desired_count_equals_the_current_one() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    targets.put("w", 3, kafka_group="g", lag_per_replica="10")
    lag.partitions["g"] = lagging("t", [10, 10, 10])
    loop, _ = make_loop(targets, lag, scaler)

    async with running(loop):
        await until(1.5)

    assert loop.ticks == 2
    assert scaler.patches == []
    assert scaler.events == []


async def test_invalid_annotations_produce_one_warning_per_distinct_set_and_no_patch() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    targets.put("w", 2, kafka_group="g", lag_per_replica="zero")
    loop, _ = make_loop(targets, lag, scaler)

    with capture_logs() as logs:
        async with running(loop):
            await until(2.5)
            targets.put("w", 2, kafka_group="g", lag_per_replica="-1")
            await until(3.5)

    warnings = [e for e in scaler.events if e[2] == "InvalidAnnotations"]
    assert len(warnings) == 2
    assert "lag-per-replica" in warnings[0][3]
    assert "'zero'" in warnings[0][3]
    assert "'-1'" in warnings[1][3]
    assert scaler.patches == []
    assert [entry["event"] for entry in logs if entry["log_level"] == "warning"] == [
        ControlLog.ANNOTATIONS_INVALID
    ] * 2


async def test_unreadable_lag_holds_replicas_and_warns_once_per_outage() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    key = targets.put("w", 4, kafka_group="g", scale_to_zero_after="1s")
    lag.partitions["g"] = errors.KafkaUnavailable("broker down")
    loop, _ = make_loop(targets, lag, scaler)

    with capture_logs() as logs:
        async with running(loop):
            await until(40.5)
            assert scaler.patches == []
            assert [e[2] for e in scaler.events] == ["LagUnavailable"]
            lag.partitions["g"] = lagging("t", [0, 0, 0, 0])
            await until(41.5)
            assert key in loop.known_targets  # the target's state survived the outage

    assert [e["event"] for e in logs if e["event"].startswith("control.lag")] == [
        ControlLog.LAG_UNAVAILABLE,
        ControlLog.LAG_RECOVERED,
    ]


async def test_a_kafka_target_without_any_bootstrap_is_held_with_a_warning() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    targets.put("w", 2, kafka_group="g")
    loop, _ = make_loop(targets, lag, scaler, default_bootstrap=None)

    async with running(loop):
        await until(0.5)

    assert scaler.patches == []
    assert scaler.events[0][2] == "LagUnavailable"
    assert "--kafka-bootstrap" in scaler.events[0][3]


async def test_a_non_leader_neither_reads_nor_patches() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    targets.put("w", 1, kafka_group="g")
    loop, _ = make_loop(targets, lag, scaler, is_leader=lambda: False)

    async with running(loop):
        await until(2.5)

    assert loop.ticks == 3
    assert lag.reads == []
    assert scaler.patches == []


async def test_losing_leadership_forgets_every_target() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    key = targets.put("w", 1, kafka_group="g")
    lag.partitions["g"] = lagging("t", [0])
    leading = [True]
    loop, _ = make_loop(targets, lag, scaler, is_leader=lambda: leading[0])

    async with running(loop):
        await until(0.5)
        assert loop.known_targets == {key}
        leading[0] = False
        await until(1.5)
        assert loop.known_targets == set()


# --- timing: the fixed-rate tick, pokes, writes in flight -------------------------------------------------


async def test_ticks_run_at_a_fixed_rate_from_the_first() -> None:
    targets, lag = FakeTargets(), FakeLag()
    loop, _ = make_loop(targets, lag, FakeScaler(targets), interval=0.25)

    async with running(loop):
        await until(2.1)
        assert loop.ticks == 9  # 0, 0.25, ..., 2.0
        assert loop.last_tick_at == 2.0


async def test_a_slow_lag_read_is_cut_at_the_tick_and_holds_the_target() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    targets.put("w", 3, kafka_group="g")
    lag.partitions["g"] = lagging("t", [0, 0, 0])
    answered = lag.read

    async def slow_read(*, bootstrap: str, groups: Sequence[GroupRead]) -> Mapping[GroupRead, GroupResult]:
        await asyncio.sleep(10)
        return await answered(bootstrap=bootstrap, groups=groups)

    lag.read = slow_read  # type: ignore[method-assign]
    loop, _ = make_loop(targets, lag, scaler)

    async with running(loop):
        await until(0.9)

    assert scaler.patches == []
    assert scaler.events[0][2] == "LagUnavailable"
    assert "within the tick" in scaler.events[0][3]


async def test_a_slow_patch_of_one_target_never_delays_another_target_or_the_next_tick() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    slow = targets.put("slow", 1, kafka_group="g1", lag_per_replica="10")
    fast = targets.put("fast", 1, kafka_group="g2", lag_per_replica="10")
    lag.partitions["g1"] = lagging("t", [30, 30, 30])
    lag.partitions["g2"] = lagging("u", [20, 20])
    scaler.block[slow] = asyncio.Event()
    loop, _ = make_loop(targets, lag, scaler)

    async with running(loop):
        await until(1.5)  # the slow patch is still in flight: no second patch is started for it
        assert loop.ticks == 2
        assert scaler.patches == [(fast, 2)]
        scaler.block[slow].set()
        await until(1.6)
        assert scaler.patches == [(fast, 2), (slow, 3)]
        await until(3.5)

    assert scaler.patches == [(fast, 2), (slow, 3)]


async def test_a_poke_decides_at_once_for_an_http_target_at_zero_without_waiting_for_the_tick() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    key = targets.put("web", 0, http_service="web", concurrency_per_replica="10")
    loop, _ = make_loop(targets, lag, scaler)

    async with running(loop):
        await until(0.1)  # the tick at 0 had no report: held at 0
        assert scaler.patches == []
        cold = frozenset({key})
        loop.report(ConcurrencyReport("a1", {key: TargetConcurrency(in_flight=0, queued=1)}, cold=cold))
        await until(0.2)
        assert loop.ticks == 1
        assert scaler.patches == [(key, 1)]

    assert [e[2] for e in scaler.events] == ["ActivatedFromZero"]


async def test_concurrency_from_several_activators_is_summed() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    key = targets.put("web", 1, http_service="web", concurrency_per_replica="10")
    loop, _ = make_loop(targets, lag, scaler)
    loop.report(ConcurrencyReport(activator="a1", targets={key: TargetConcurrency(in_flight=15, queued=5)}))
    loop.report(ConcurrencyReport(activator="a2", targets={key: TargetConcurrency(in_flight=10, queued=0)}))

    async with running(loop):
        await until(0.5)

    assert scaler.patches == [(key, 3)]


async def test_an_idle_target_reaches_zero_after_scale_to_zero_after_and_persists_last_active() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    key = targets.put("w", 2, kafka_group="g", scale_to_zero_after="30s", scale_down_window="10s")
    lag.partitions["g"] = lagging("t", [0, 0])
    loop, _ = make_loop(targets, lag, scaler)

    async with running(loop):
        await until(0.5)
        assert scaler.last_active == [(key, T0)]
        await until(29.5)
        assert (key, 0) not in scaler.patches
        await until(30.5)

    assert scaler.patches == [(key, 1), (key, 0)]  # the window at 10 s, the idle timer at 30 s
    assert scaler.events[-1][2] == "ScaledToZero"


async def test_a_deleted_target_is_forgotten_and_its_metric_series_removed() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    key = targets.put("w", 1, kafka_group="g")
    lag.partitions["g"] = lagging("t", [0])
    loop, registry = make_loop(targets, lag, scaler)
    labels = {"namespace": "ns", "deployment": "w"}

    async with running(loop):
        await until(0.5)
        assert registry.get_sample_value("queue_autoscaler_current_replicas", labels) == 1
        del targets.infos[key]
        await until(1.5)

    assert registry.get_sample_value("queue_autoscaler_current_replicas", labels) is None
    assert key not in loop.known_targets


async def test_a_target_deleted_while_its_patch_is_sent_does_not_crash_the_loop() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    key = targets.put("w", 1, kafka_group="g", lag_per_replica="1")
    lag.partitions["g"] = lagging("t", [5, 5])
    scaler.gone.add(key)
    loop, _ = make_loop(targets, lag, scaler)

    with capture_logs() as logs:
        async with running(loop) as task:
            await until(1.5)
            assert not task.done()

    assert any(entry["event"] == ControlLog.SCALE_TARGET_GONE for entry in logs)


async def test_a_target_first_seen_with_invalid_annotations_keeps_its_last_active_countdown_once_fixed() -> (
    None
):
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    persisted = (T0 - timedelta(seconds=8)).strftime("%Y-%m-%dT%H:%M:%SZ")
    targets.put(
        "w", 1, kafka_group="g", lag_per_replica="abc", scale_to_zero_after="10s", last_active=persisted
    )
    lag.partitions["g"] = lagging("t", [0])
    loop, _ = make_loop(targets, lag, scaler)

    async with running(loop):
        await until(0.5)  # e.g. a controller restarted while the annotation was bad
        key = targets.put(
            "w", 1, kafka_group="g", lag_per_replica="10", scale_to_zero_after="10s", last_active=persisted
        )
        await until(1.5)
        assert scaler.patches == []
        await until(2.5)

    assert scaler.last_active == []  # the persisted idle start still holds: nothing to rewrite
    assert scaler.patches == [(key, 0)]  # at last-active + 10 s, not 10 s after the fix


async def test_a_decision_made_while_a_patch_is_in_flight_is_patched_right_after_it() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    key = targets.put("web", 0, http_service="web", concurrency_per_replica="10")
    scaler.block[key] = asyncio.Event()
    loop, _ = make_loop(targets, lag, scaler)
    cold = frozenset({key})

    async with running(loop):
        await until(0.1)
        loop.report(ConcurrencyReport("a1", {key: TargetConcurrency(in_flight=0, queued=1)}, cold=cold))
        await until(0.2)  # 0 -> 1, held in flight
        loop.report(ConcurrencyReport("a1", {key: TargetConcurrency(in_flight=0, queued=50)}, cold=cold))
        await until(0.3)  # 0 -> 5 wanted while the first patch is still in flight
        scaler.block[key].set()
        await until(0.4)
        assert loop.ticks == 1

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

    async with running(loop):
        await until(0.5)  # idle at 0: the last-active write starts and is slow
        lag.partitions["g"] = lagging("t", [5])
        await until(1.5)  # the lag arrives while it is in flight: 0 -> 1 is wanted
        written.set()
        await until(1.6)
        assert scaler.patches == [(key, 1)]  # without another tick

    assert scaler.last_active == [(key, T0), (key, None)]  # idle, then active again
    assert [e[2] for e in scaler.events] == ["ActivatedFromZero"]


async def test_stopping_the_loop_lets_a_patch_in_flight_finish() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    key = targets.put("w", 1, kafka_group="g", lag_per_replica="10")
    lag.partitions["g"] = lagging("t", [30, 30, 30])
    scaler.block[key] = asyncio.Event()
    loop, _ = make_loop(targets, lag, scaler)
    task = asyncio.create_task(loop.run())
    await until(0.5)

    task.cancel()
    await until(0.6)
    assert not task.done()  # waiting for the patch
    scaler.block[key].set()
    with contextlib.suppress(asyncio.CancelledError):
        await task

    assert scaler.patches == [(key, 3)]
    assert [e[2] for e in scaler.events] == ["ScaledUp"]


# --- activity between reports ---------------------------------------------------------------------------


@dataclass
class SteadyTraffic:
    """An activator with one short request every ``every`` seconds, reporting every second.

    Like ``activator.buffer``: a report holds the in-flight count at its instant and, for its window since
    the previous report, the requests started and the peak in flight.
    """

    key: TargetKey
    in_flight: int = 0
    started: int = 0
    peak: int = 0

    async def requests(self, *, count: int, every: float, lasting: float) -> None:
        for _ in range(count):
            self.in_flight += 1
            self.started += 1
            self.peak = max(self.peak, self.in_flight)
            await asyncio.sleep(lasting)
            self.in_flight -= 1
            await asyncio.sleep(every - lasting)

    async def reports(self, loop: ControlLoop) -> None:
        while True:
            counts = TargetConcurrency(self.in_flight, 0, started=self.started, peak=self.peak)
            loop.report(ConcurrencyReport("a1", {self.key: counts}))
            self.started, self.peak = 0, self.in_flight
            await asyncio.sleep(1.0)


async def test_steady_light_http_traffic_never_scales_to_zero_between_requests() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    key = targets.put("web", 1, http_service="web", scale_to_zero_after="30s")
    loop, _ = make_loop(targets, lag, scaler)
    traffic = SteadyTraffic(key)

    async with running(loop), asyncio.TaskGroup() as activator:
        await until(0.5)  # reports fall between ticks, requests between reports
        reporting = activator.create_task(traffic.reports(loop))
        await until(0.8)
        # 30 requests, one every 2 s, 50 ms each: no report ever sees one in flight.
        await activator.create_task(traffic.requests(count=30, every=2.0, lasting=0.05))
        last_request = asyncio.get_running_loop().time() - 2.0
        assert scaler.patches == []  # 0 scale-downs while the traffic lasted
        await until(last_request + 33.0)  # then idle: to zero after scale-to-zero-after
        reporting.cancel()

    assert scaler.patches == [(key, 0)]
    assert [e[2] for e in scaler.events] == ["ScaledToZero"]


# --- what the metrics and Events say about a target --------------------------------------------------------


async def test_a_deployment_that_loses_every_source_annotation_is_dropped_with_an_event_and_no_series() -> (
    None
):
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    key = targets.put("w", 2, kafka_group="g", max_replicas="5")
    lag.partitions["g"] = lagging("t", [0, 0])
    loop, registry = make_loop(targets, lag, scaler)
    labels = {"namespace": "ns", "deployment": "w"}

    with capture_logs() as logs:
        async with running(loop):
            await until(0.5)
            assert registry.get_sample_value("queue_autoscaler_desired_replicas", labels) == 2
            targets.put("w", 2, max_replicas="5")  # kafka-group removed, another annotation kept
            await until(3.5)

    assert key not in loop.known_targets
    assert [(e[1], e[2], e[3]) for e in scaler.events] == [
        ("Normal", "NoLongerATarget", "no longer a target: no source annotation; replicas left as they are")
    ]
    assert [e["event"] for e in logs if e["event"] == ControlLog.TARGET_DROPPED] == [
        ControlLog.TARGET_DROPPED
    ]
    for name in ("queue_autoscaler_desired_replicas", "queue_autoscaler_current_replicas"):
        assert registry.get_sample_value(name, labels) is None
    assert registry.get_sample_value("queue_autoscaler_source_up", {**labels, "source": "kafka"}) is None
    assert scaler.patches == []


async def test_unreadable_lag_has_no_lag_series_and_its_source_is_down_until_it_returns() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    targets.put("w", 2, kafka_group="g", lag_per_replica="10")
    lag.partitions["g"] = lagging("t", [7, 0])
    loop, registry = make_loop(targets, lag, scaler)
    labels = {"namespace": "ns", "deployment": "w"}
    kafka = {**labels, "source": "kafka"}

    async with running(loop):
        await until(0.5)
        assert registry.get_sample_value("queue_autoscaler_lag", labels) == 7
        assert registry.get_sample_value("queue_autoscaler_source_up", kafka) == 1
        lag.partitions["g"] = errors.KafkaUnavailable("broker down")
        await until(1.5)
        assert registry.get_sample_value("queue_autoscaler_lag", labels) is None
        assert registry.get_sample_value("queue_autoscaler_source_up", kafka) == 0
        lag.partitions["g"] = lagging("t", [3, 0])
        await until(2.5)

    assert registry.get_sample_value("queue_autoscaler_lag", labels) == 3
    assert registry.get_sample_value("queue_autoscaler_source_up", kafka) == 1


async def test_an_http_target_without_reports_has_its_http_source_down() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    key = targets.put("web", 1, http_service="web")
    loop, registry = make_loop(targets, lag, scaler)
    http = {"namespace": "ns", "deployment": "web", "source": "http"}

    async with running(loop):
        await until(0.5)
        assert registry.get_sample_value("queue_autoscaler_source_up", http) == 0
        loop.report(ConcurrencyReport("a1", {key: TargetConcurrency(in_flight=1, queued=0)}))
        await until(1.5)

    assert registry.get_sample_value("queue_autoscaler_source_up", http) == 1
    assert registry.get_sample_value("queue_autoscaler_lag", {"namespace": "ns", "deployment": "web"}) is None


async def test_the_tick_duration_histogram_measures_the_tick_not_the_uptime() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    key = targets.put("web", 1, http_service="web")
    loop, registry = make_loop(targets, lag, scaler)
    loop.report(ConcurrencyReport("a1", {key: TargetConcurrency(0, 0, started=3, peak=1)}))

    async with running(loop):
        await until(2.5)

    count = registry.get_sample_value("queue_autoscaler_tick_duration_seconds_count")
    total = registry.get_sample_value("queue_autoscaler_tick_duration_seconds_sum")
    assert count == 3
    assert total is not None
    assert 0 < total < 3600  # each tick of fakes takes far less than an hour, whatever the machine
