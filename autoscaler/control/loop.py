"""The control loop: a fixed-rate tick plus immediate pokes; the only place that reads the clock.

One tick reads every Kafka target's offsets in a few batched requests (one batch per bootstrap address),
decides per target with the pure ``policy.decide``, and starts a patch only for targets whose count changes.
Patches run as tasks of their own, so a slow or failing target never delays the others or the next tick.
A poke (the activator saw a request for a target with no ready endpoint) decides that one target at once,
with its last Kafka reading and the current concurrency, instead of waiting for the tick.
"""

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import structlog

from autoscaler import errors
from autoscaler.model import ConcurrencyReport, Decision, Observation, PartitionOffsets, TargetKey
from autoscaler.observability.metrics import ControllerMetrics
from autoscaler.policy import annotations, decide
from autoscaler.policy.annotations import ScalingPolicy

log = structlog.get_logger(__name__)


class TargetInfo(Protocol):
    """What the loop needs to know of an annotated Deployment (kube.targets provides it)."""

    @property
    def key(self) -> TargetKey: ...
    @property
    def uid(self) -> str: ...
    @property
    def annotations(self) -> Mapping[str, str]: ...
    @property
    def replicas(self) -> int: ...


class TargetSource(Protocol):
    def snapshot(self) -> Mapping[TargetKey, TargetInfo]: ...


@dataclass(frozen=True, slots=True)
class GroupRead:
    """One consumer group to read: its topics (empty = every topic it has offsets for)."""

    group: str
    topics: tuple[str, ...]


GroupResult = tuple[PartitionOffsets, ...] | errors.KafkaError


class LagSource(Protocol):
    """Reads the offsets of many groups of one Kafka cluster in one batch."""

    async def read(
        self, *, bootstrap: str, groups: Sequence[GroupRead]
    ) -> Mapping[GroupRead, GroupResult]: ...


class Scaler(Protocol):
    """Writes to the Deployments (kube.scaling behind it)."""

    async def scale(self, *, target: TargetKey, replicas: int) -> int: ...
    async def set_last_active(self, *, target: TargetKey, when: datetime | None) -> None: ...
    async def event(
        self, *, target: TargetKey, uid: str, type: str, reason: str, message: str, action: str
    ) -> None: ...


def _wall_clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Target:
    """The loop's memory of one target between ticks."""

    state: decide.DecisionState
    persisted_last_active: datetime | None
    last_decision: Decision | None = None
    last_partitions: tuple[PartitionOffsets, ...] | None = None
    last_kafka_error: str | None = None
    patching: asyncio.Task[None] | None = None


@dataclass
class _Reports:
    """Latest concurrency report of each activator replica, with when it arrived (loop time)."""

    by_activator: dict[str, tuple[float, ConcurrencyReport]] = field(default_factory=dict)

    def concurrency(self, key: TargetKey, *, now: float, fresh_for: float) -> int | None:
        fresh = [report for at, report in self.by_activator.values() if now - at <= fresh_for]
        if not fresh:
            return None
        return sum(r.targets[key].total for r in fresh if key in r.targets)


class ControlLoop:
    def __init__(
        self,
        *,
        targets: TargetSource,
        lag: LagSource,
        scaler: Scaler,
        metrics: ControllerMetrics,
        default_bootstrap: str | None,
        interval: float = 1.0,
        report_freshness: float = 5.0,
        is_leader: Callable[[], bool] = lambda: True,
        wall_clock: Callable[[], datetime] = _wall_clock,
    ) -> None:
        self._targets = targets
        self._lag = lag
        self._scaler = scaler
        self._metrics = metrics
        self._default_bootstrap = default_bootstrap
        self.interval = interval
        self._report_freshness = report_freshness
        self._is_leader = is_leader
        self._wall_clock = wall_clock
        self._memory: dict[TargetKey, _Target] = {}
        # Problems last reported per target with invalid annotations, kept apart from ``_memory``: a target
        # first seen invalid gets its decision state, seeded from last-active, only once it is valid.
        self._invalid: dict[TargetKey, frozenset[errors.AnnotationProblem]] = {}
        self._policies: dict[tuple[tuple[str, str], ...], ScalingPolicy | errors.PolicyError | None] = {}
        self._reports = _Reports()
        self._poked: set[TargetKey] = set()
        self._wake = asyncio.Event()
        self._event_tasks: set[asyncio.Task[None]] = set()
        self.ticks = 0
        self.last_tick_at: float | None = None

    # --- inputs from the activators --------------------------------------------------------------------
    def report(self, report: ConcurrencyReport) -> None:
        self._reports.by_activator[report.activator] = (asyncio.get_running_loop().time(), report)
        for key in report.cold:
            self.poke(key)

    def poke(self, key: TargetKey) -> None:
        self._poked.add(key)
        self._wake.set()

    # --- running ----------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Ticks at a fixed rate until cancelled; in-flight patches finish before it returns."""
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        try:
            while True:
                now = loop.time()
                if now >= next_tick:
                    missed = int((now - next_tick) // self.interval)
                    if missed:
                        log.warning("tick overran", missed_ticks=missed, interval=self.interval)
                    # Fixed rate from the first tick: never drifts, never overlaps, skips what it missed.
                    next_tick += (missed + 1) * self.interval
                    await self.tick()
                    continue
                if self._poked:
                    await self.decide_poked()
                    continue
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=next_tick - now)
        finally:
            await self.drain()

    async def drain(self) -> None:
        """Waits for the patches and Events in flight (each bounded by its own API timeouts)."""
        pending = [
            m.patching for m in self._memory.values() if m.patching is not None and not m.patching.done()
        ]
        pending.extend(task for task in self._event_tasks if not task.done())
        if pending:
            log.info("waiting for in-flight patches", count=len(pending))
            await asyncio.gather(*pending, return_exceptions=True)

    async def tick(self) -> None:
        started = time.perf_counter()
        self.ticks += 1
        self._metrics.ticks.inc()
        self.last_tick_at = asyncio.get_running_loop().time()
        if not self._is_leader():
            self._memory.clear()  # a new leadership starts from the persisted last-active, not stale memory
            self._invalid.clear()
            return
        snapshot = self._targets.snapshot()
        self._forget_deleted(snapshot)
        self._metrics.targets.set(len(snapshot))
        policies = {key: self._policy(info) for key, info in snapshot.items()}
        valid = {key: p for key, p in policies.items() if isinstance(p, ScalingPolicy)}
        for key, outcome in policies.items():
            if isinstance(outcome, errors.PolicyError):
                self._report_invalid(snapshot[key], outcome)
        readings = await self._read_lag(valid)
        now = self._wall_clock()
        for key, policy in valid.items():
            info = snapshot[key]
            memory = self._remember(key, policy)
            self._invalid.pop(key, None)
            if policy.uses_kafka:
                reading = readings.get(key)
                if isinstance(reading, errors.KafkaError):
                    self._lag_unavailable(info, memory, str(reading))
                    memory.last_partitions = None
                else:
                    if memory.last_kafka_error is not None:
                        log.info("lag readable again", namespace=key.namespace, deployment=key.name)
                    memory.last_kafka_error = None
                    memory.last_partitions = reading
            self._decide(info, policy, memory, now)
        self._poked.clear()
        self._metrics.tick_seconds.observe(time.perf_counter() - started)

    async def decide_poked(self) -> None:
        """Decides at once for targets an activator poked, using their last Kafka reading."""
        poked, self._poked = self._poked, set()
        if not self._is_leader():
            return
        snapshot = self._targets.snapshot()
        now = self._wall_clock()
        for key in poked:
            info = snapshot.get(key)
            if info is None:
                continue
            policy = self._policy(info)
            if isinstance(policy, ScalingPolicy):
                self._decide(info, policy, self._remember(key, policy), now, poked=True)

    # --- per target ---------------------------------------------------------------------------------------
    def _policy(self, info: TargetInfo) -> ScalingPolicy | errors.PolicyError | None:
        cache_key = tuple(sorted(info.annotations.items()))
        if cache_key not in self._policies:
            if len(self._policies) > 10_000:
                self._policies.clear()
            try:
                self._policies[cache_key] = annotations.parse(info.annotations)
            except errors.PolicyError as exc:
                self._policies[cache_key] = exc
        return self._policies[cache_key]

    def _remember(self, key: TargetKey, policy: ScalingPolicy) -> _Target:
        memory = self._memory.get(key)
        if memory is None:
            memory = _Target(
                state=decide.DecisionState.initial(policy.last_active),
                persisted_last_active=policy.last_active,
            )
            self._memory[key] = memory
        return memory

    def _forget_deleted(self, snapshot: Mapping[TargetKey, TargetInfo]) -> None:
        for key in [k for k in self._invalid if k not in snapshot]:
            del self._invalid[key]
        for key in [k for k in self._memory if k not in snapshot]:
            memory = self._memory.pop(key)
            if memory.patching is not None and not memory.patching.done():
                memory.patching.cancel()
            self._metrics.forget_target(key)
            log.info("target gone", namespace=key.namespace, deployment=key.name)

    async def _read_lag(
        self, policies: Mapping[TargetKey, ScalingPolicy]
    ) -> dict[TargetKey, tuple[PartitionOffsets, ...] | errors.KafkaError]:
        by_bootstrap: dict[str, dict[TargetKey, GroupRead]] = {}
        results: dict[TargetKey, tuple[PartitionOffsets, ...] | errors.KafkaError] = {}
        for key, policy in policies.items():
            if policy.kafka_group is None:
                continue
            # One batch per Kafka connection; kafka-bootstrap: that connection's settings, these brokers.
            bootstrap: str | None = policy.kafka_connection
            if policy.kafka_bootstrap:
                bootstrap = f"{policy.kafka_connection}@{','.join(policy.kafka_bootstrap)}"
            elif policy.kafka_connection == "default" and self._default_bootstrap is None:
                bootstrap = None
            if bootstrap is None:
                results[key] = errors.KafkaError(
                    "no Kafka bootstrap: set --kafka-bootstrap or the kafka-bootstrap annotation"
                )
                continue
            by_bootstrap.setdefault(bootstrap, {})[key] = GroupRead(policy.kafka_group, policy.kafka_topics)

        async def read_one(bootstrap: str, wanted: dict[TargetKey, GroupRead]) -> None:
            groups = sorted(set(wanted.values()), key=lambda g: (g.group, g.topics))
            try:
                answer = await asyncio.wait_for(
                    self._lag.read(bootstrap=bootstrap, groups=groups), timeout=max(self.interval * 0.8, 0.5)
                )
            except TimeoutError:
                answer = {
                    g: errors.KafkaUnavailable(f"no answer from {bootstrap} within the tick") for g in groups
                }
            except errors.KafkaError as exc:
                answer = dict.fromkeys(groups, exc)
            for key, group in wanted.items():
                results[key] = answer.get(
                    group, errors.KafkaError(f"group {group.group!r} missing from the read")
                )

        await asyncio.gather(*(read_one(b, wanted) for b, wanted in by_bootstrap.items()))
        return results

    def _decide(
        self, info: TargetInfo, policy: ScalingPolicy, memory: _Target, now: datetime, *, poked: bool = False
    ) -> None:
        key = info.key
        concurrency = (
            self._reports.concurrency(
                key, now=asyncio.get_running_loop().time(), fresh_for=self._report_freshness
            )
            if policy.uses_http
            else None
        )
        if poked and concurrency is not None:
            concurrency = max(concurrency, 1)  # the poke itself is a request waiting
        observation = Observation(
            current_replicas=info.replicas,
            partitions=memory.last_partitions if policy.uses_kafka else None,
            kafka_error=memory.last_kafka_error,
            concurrency=concurrency,
        )
        started = time.perf_counter()
        decision, memory.state = decide.decide(policy, observation, memory.state, now)
        self._metrics.decision_seconds.observe(time.perf_counter() - started)
        self._metrics.observe_target(
            key,
            desired=decision.desired_replicas,
            current=info.replicas,
            lag=decision.total_lag,
            concurrency=concurrency,
            active=decision.active,
        )
        previous = memory.last_decision
        if previous is None or (previous.desired_replicas, previous.rule) != (
            decision.desired_replicas,
            decision.rule,
        ):
            log.info(
                "decision",
                namespace=key.namespace,
                deployment=key.name,
                current=info.replicas,
                desired=decision.desired_replicas,
                rule=decision.rule,
                reason=decision.reason,
                lag=decision.total_lag,
                concurrency=concurrency,
                partitions=None if memory.last_partitions is None else len(memory.last_partitions),
                kafka_error=memory.last_kafka_error,
                poked=poked,
                tick=self.ticks,
            )
        memory.last_decision = decision
        needs_patch = decision.desired_replicas != info.replicas
        needs_last_active = decision.idle_since != memory.persisted_last_active
        if (needs_patch or needs_last_active) and (memory.patching is None or memory.patching.done()):
            memory.patching = asyncio.create_task(
                self._apply(
                    info, decision, patch=needs_patch, last_active=needs_last_active, observed=started
                ),
                name=f"apply {key}",
            )

    async def _apply(
        self, info: TargetInfo, decision: Decision, *, patch: bool, last_active: bool, observed: float
    ) -> None:
        key = info.key
        bound = log.bind(namespace=key.namespace, deployment=key.name)
        memory = self._memory.get(key)
        try:
            current = info.replicas
            while True:
                while patch:
                    await self._scaler.scale(target=key, replicas=decision.desired_replicas)
                    self._metrics.reaction_seconds.observe(time.perf_counter() - observed)
                    reason, direction = _event_reason(current, decision.desired_replicas)
                    self._metrics.scale_patches.labels(key.namespace, key.name, direction).inc()
                    bound.info(
                        "scaled", reason=reason, replicas_from=current, replicas_to=decision.desired_replicas
                    )
                    await self._scaler.event(
                        target=key,
                        uid=info.uid,
                        type="Normal",
                        reason=reason,
                        action="Scale",
                        message=f"{current} -> {decision.desired_replicas} replicas ({decision.rule}): "
                        f"{decision.reason}",
                    )
                    current = decision.desired_replicas
                    # A decision made while this patch was in flight (a poke, a tick) is applied right away.
                    latest = memory.last_decision if memory is not None else None
                    patch = latest is not None and latest.desired_replicas != current
                    if latest is not None:
                        decision, observed = latest, time.perf_counter()
                if memory is None:
                    break
                if last_active:
                    await self._scaler.set_last_active(target=key, when=decision.idle_since)
                    memory.persisted_last_active = decision.idle_since
                # ... and so is one made while the last-active write was in flight (e.g. lag arriving just
                # as the target went idle): it must not wait for the next tick.
                latest = memory.last_decision
                if latest is None or latest.desired_replicas == current:
                    break
                decision, observed, patch = latest, time.perf_counter(), True
                last_active = latest.idle_since != memory.persisted_last_active
        except errors.TargetGone:
            bound.info("target gone while scaling")
        except errors.AutoscalerError as exc:
            self._metrics.errors.labels(type(exc).__name__).inc()
            bound.warning("scale failed", error=str(exc), kind=type(exc).__name__)

    def _report_invalid(self, info: TargetInfo, error: errors.PolicyError) -> None:
        key = info.key
        problems = frozenset(error.problems)
        if self._invalid.get(key) == problems:
            return
        self._invalid[key] = problems
        self._metrics.errors.labels("InvalidAnnotations").inc()
        log.warning("invalid annotations", namespace=key.namespace, deployment=key.name, problems=str(error))
        self._send_event(
            info, type="Warning", reason="InvalidAnnotations", message=f"replicas left untouched: {error}"
        )

    def _lag_unavailable(self, info: TargetInfo, memory: _Target, error: str) -> None:
        self._metrics.errors.labels("LagUnavailable").inc()
        if memory.last_kafka_error is None:
            log.warning(
                "lag unavailable", namespace=info.key.namespace, deployment=info.key.name, error=error
            )
            self._send_event(
                info,
                type="Warning",
                reason="LagUnavailable",
                message=f"holding replicas while consumer-group lag cannot be read: {error}",
            )
        memory.last_kafka_error = error

    def _send_event(self, info: TargetInfo, *, type: str, reason: str, message: str) -> None:
        async def send() -> None:
            try:
                await self._scaler.event(
                    target=info.key, uid=info.uid, type=type, reason=reason, message=message, action="Decide"
                )
            except errors.AutoscalerError as exc:
                log.warning("event failed", reason=reason, error=str(exc))

        task = asyncio.create_task(send(), name=f"event {info.key} {reason}")
        self._event_tasks.add(task)
        task.add_done_callback(self._event_tasks.discard)


def _event_reason(current: int, desired: int) -> tuple[str, str]:
    if current == 0:
        return "ActivatedFromZero", "from-zero"
    if desired == 0:
        return "ScaledToZero", "to-zero"
    if desired > current:
        return "ScaledUp", "up"
    return "ScaledDown", "down"
