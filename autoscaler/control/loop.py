"""The control loop: a fixed-rate tick plus immediate pokes; the only place that decides when to read.

One tick reads every Kafka target's offsets in a few batched requests (one batch per cluster) and posts
each target's reading to the target's worker (``control.worker``), which decides with the pure
``policy.decide`` and writes. A slow or failing target never delays the others or the next tick. A poke
(the activator saw a request for a target with no ready endpoint) wakes that target's worker at once, with
its last Kafka reading and the current concurrency, instead of waiting for the tick.
"""

import asyncio
import contextlib
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog

from autoscaler import errors
from autoscaler.control import backlogs, ports, trigger_reads
from autoscaler.control.ports import GroupRead, GroupResult, LagSource, Scaler, TargetInfo, TargetSource
from autoscaler.control.worker import Inputs, TargetWorker
from autoscaler.model import ConcurrencyReport, EventReason, TargetKey
from autoscaler.observability.log_events import ControlLog
from autoscaler.observability.metrics import ControllerMetrics
from autoscaler.policy import annotations, connection_names, hosts
from autoscaler.policy.annotations import ScalingPolicy

__all__ = ["ControlLoop", "GroupRead", "GroupResult", "LagSource", "Scaler", "TargetInfo", "TargetSource"]

log = structlog.get_logger(__name__)


def _wall_clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Reports:
    """Latest concurrency report of each activator replica, with when it arrived (loop time); and per
    target, the requests started and the peak concurrency of every report window since they were taken."""

    by_activator: dict[str, tuple[float, ConcurrencyReport]] = field(default_factory=dict)
    windows: dict[TargetKey, tuple[int, int]] = field(default_factory=dict)

    def add(self, report: ConcurrencyReport, *, now: float) -> None:
        self.by_activator[report.activator] = (now, report)
        for key, counts in report.targets.items():
            if counts.started or counts.peak:
                started, peak = self.windows.get(key, (0, 0))
                self.windows[key] = (started + counts.started, max(peak, counts.peak))

    def concurrency(self, key: TargetKey, *, now: float, fresh_for: float) -> int | None:
        fresh = [report for at, report in self.by_activator.values() if now - at <= fresh_for]
        if not fresh:
            return None
        return sum(r.targets[key].total for r in fresh if key in r.targets)

    def take_window(self, key: TargetKey) -> tuple[int, int]:
        """(requests started, peak concurrency) reported for ``key`` since the previous call."""
        return self.windows.pop(key, (0, 0))


class ControlLoop:
    def __init__(
        self,
        *,
        targets: TargetSource,
        lag: LagSource,
        scaler: Scaler,
        metrics: ControllerMetrics,
        default_bootstrap: str | None,
        sources: backlogs.BacklogSource | None = None,
        interval: float = 1.0,
        report_freshness: float = 5.0,
        is_leader: Callable[[], bool] = lambda: True,
        wall_clock: Callable[[], datetime] = _wall_clock,
        cross_namespace_hosts: bool = False,
        connections: Mapping[str, Collection[str]] | None = None,
        triggers: ports.TriggerDirectory | None = None,
    ) -> None:
        self._targets = targets
        self._lag = lag
        self._scaler = scaler
        self._metrics = metrics
        self._default_bootstrap = default_bootstrap
        self._sources = sources
        self._triggers = triggers  # the Broker of each Trigger a `trigger` annotation names
        self.interval = interval
        self._report_freshness = report_freshness
        self._is_leader = is_leader
        self._wall_clock = wall_clock
        self._workers: dict[TargetKey, tuple[TargetWorker, asyncio.Task[None]]] = {}
        # Problems last reported per target with invalid annotations. A target first seen invalid gets its
        # worker (and decision state, seeded from last-active) only once it is valid.
        self._invalid: dict[TargetKey, frozenset[errors.AnnotationProblem]] = {}
        # http-host claims refused by host ownership (the same rules the activators route by), as last
        # reported: the target still scales (its own host routes), the refused name is reported once.
        self._cross_namespace_hosts = cross_namespace_hosts
        self._connections = connections  # names per kind, to refuse unknown ones; None: not checked
        self._refused_hosts: dict[TargetKey, errors.AnnotationProblem] = {}
        self._policies: dict[tuple[tuple[str, str], ...], ScalingPolicy | errors.PolicyError | None] = {}
        self._reports = _Reports()
        self._poked: set[TargetKey] = set()
        self._wake = asyncio.Event()
        self._group: asyncio.TaskGroup | None = None
        self._event_tasks: set[asyncio.Task[None]] = set()
        self.ticks = 0
        self.last_tick_at: float | None = None

    @property
    def known_targets(self) -> frozenset[TargetKey]:
        """Targets that have a worker (and so a decision state) now."""
        return frozenset(self._workers)

    # --- inputs from the activators --------------------------------------------------------------------
    def report(self, report: ConcurrencyReport) -> None:
        self._reports.add(report, now=asyncio.get_running_loop().time())
        for key in report.cold:
            self.poke(key)

    def poke(self, key: TargetKey) -> None:
        self._poked.add(key)
        self._wake.set()

    # --- running ----------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Ticks at a fixed rate until cancelled; writes in flight finish before it returns."""
        async with asyncio.TaskGroup() as group:
            self._group = group
            try:
                await self._run_ticks()
            finally:
                await self._stop_workers()
                self._group = None

    async def _run_ticks(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            now = loop.time()
            if now >= next_tick:
                missed = int((now - next_tick) // self.interval)
                if missed:
                    log.warning(ControlLog.TICK_OVERRAN, missed_ticks=missed, interval=self.interval)
                # Fixed rate from the first tick: never drifts, never overlaps, skips what it missed.
                next_tick += (missed + 1) * self.interval
                await self._tick()
                continue
            if self._poked:
                self._decide_poked()
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(next_tick - now):
                    await self._wake.wait()

    async def _stop_workers(self) -> None:
        """Lets every worker finish its write in flight (each bounded by its API timeouts), then stops it."""
        tasks = [task for _, task in self._workers.values() if not task.done()]
        for worker, _ in self._workers.values():
            worker.close()
        self._workers.clear()
        tasks.extend(task for task in self._event_tasks if not task.done())
        if tasks:
            log.info(ControlLog.WORKERS_DRAINING, count=len(tasks))
            await asyncio.wait(tasks)

    async def _tick(self) -> None:
        started = time.perf_counter()
        self.ticks += 1
        self._metrics.ticks.inc()
        loop_now = asyncio.get_running_loop().time()
        self.last_tick_at = loop_now
        if not self._is_leader():
            # A new leadership starts from the persisted last-active, not from stale memory.
            for worker, _ in self._workers.values():
                worker.close()
            self._workers.clear()
            self._invalid.clear()
            return
        snapshot = self._targets.snapshot()
        self._forget_deleted(snapshot)
        self._metrics.targets.set(len(snapshot))
        policies = {key: self._policy(info) for key, info in snapshot.items()}
        for key, outcome in policies.items():
            if outcome is None and (key in self._workers or key in self._invalid):
                self._drop(snapshot[key])
        valid = {key: p for key, p in policies.items() if isinstance(p, ScalingPolicy)}
        for key, outcome in policies.items():
            if isinstance(outcome, errors.PolicyError):
                self._report_invalid(snapshot[key], outcome)
        self._report_refused_hosts(snapshot, valid)
        readings, figures = await asyncio.gather(self._read_lag(valid), self._read_sources(valid))
        for key, policy in valid.items():
            self._invalid.pop(key, None)
            reading = readings.get(key)
            failed = isinstance(reading, errors.KafkaError)
            requests, peak = self._reports.take_window(key) if policy.uses_http else (0, 0)
            self._worker(key, policy).post(
                Inputs(
                    info=snapshot[key],
                    policy=policy,
                    partitions=None if isinstance(reading, errors.KafkaError) else reading,
                    kafka_error=str(reading) if failed else None,
                    figures=figures.get(key, backlogs.SourceFigures()),
                    concurrency=self._concurrency(key, policy, loop_now),
                    started=requests,
                    peak=peak,
                    tick=self.ticks,
                )
            )
        self._poked.clear()
        self._metrics.tick_seconds.observe(time.perf_counter() - started)

    def _decide_poked(self) -> None:
        """Wakes the workers of the targets an activator poked, with their last Kafka reading."""
        poked, self._poked = self._poked, set()
        if not self._is_leader():
            return
        snapshot = self._targets.snapshot()
        loop_now = asyncio.get_running_loop().time()
        for key in poked:
            info = snapshot.get(key)
            if info is None:
                continue
            policy = self._policy(info)
            if isinstance(policy, ScalingPolicy):
                started, peak = self._reports.take_window(key)
                concurrency = self._concurrency(key, policy, loop_now)
                self._worker(key, policy).poke(info, policy, concurrency, started=started, peak=peak)

    # --- per target ---------------------------------------------------------------------------------------
    def _concurrency(self, key: TargetKey, policy: ScalingPolicy, loop_now: float) -> int | None:
        if not policy.uses_http:
            return None
        return self._reports.concurrency(key, now=loop_now, fresh_for=self._report_freshness)

    def _worker(self, key: TargetKey, policy: ScalingPolicy) -> TargetWorker:
        entry = self._workers.get(key)
        if entry is not None:
            return entry[0]
        if self._group is None:
            raise RuntimeError("the control loop is not running")
        worker = TargetWorker(
            key,
            policy,
            scaler=self._scaler,
            metrics=self._metrics,
            wall_clock=self._wall_clock,
            send_event=self._send_event,
        )
        self._workers[key] = (worker, self._group.create_task(worker.run(), name=f"target {key}"))
        return worker

    def _policy(self, info: TargetInfo) -> ScalingPolicy | errors.PolicyError | None:
        cache_key = tuple(sorted(info.annotations.items()))
        if cache_key not in self._policies:
            if len(self._policies) > 10_000:
                self._policies.clear()
            try:
                policy = annotations.parse(info.annotations)
                unknown = (
                    ()
                    if policy is None or self._connections is None
                    else (connection_names.unknown(policy, info.annotations, self._connections))
                )
                self._policies[cache_key] = errors.PolicyError(unknown) if unknown else policy
            except errors.PolicyError as exc:
                self._policies[cache_key] = exc
        return self._policies[cache_key]

    def _report_refused_hosts(
        self, snapshot: Mapping[TargetKey, TargetInfo], valid: Mapping[TargetKey, ScalingPolicy]
    ) -> None:
        """An InvalidAnnotations Event, naming the owner, for each newly refused http-host claim."""
        ownership = hosts.resolve(
            (
                hosts.Claimant(key, snapshot[key].created, policy.http_host)
                for key, policy in valid.items()
                if policy.uses_http
            ),
            cross_namespace=self._cross_namespace_hosts,
        )
        for key, problem in ownership.refused.items():
            if self._refused_hosts.get(key) == problem:
                continue
            self._refused_hosts[key] = problem
            self._metrics.errors.labels(EventReason.INVALID_ANNOTATIONS).inc()
            log.warning(
                ControlLog.HOST_REFUSED, namespace=key.namespace, deployment=key.name, problem=str(problem)
            )
            self._send_event(
                snapshot[key],
                type="Warning",
                reason=EventReason.INVALID_ANNOTATIONS,
                message=f"http-host not routed to this Deployment: {problem}",
            )
        for key in [k for k in self._refused_hosts if k not in ownership.refused]:
            del self._refused_hosts[key]

    def _forget_deleted(self, snapshot: Mapping[TargetKey, TargetInfo]) -> None:
        for key in [k for k in self._invalid if k not in snapshot]:
            del self._invalid[key]
        for key in [k for k in self._workers if k not in snapshot]:
            _, task = self._workers.pop(key)
            task.cancel()
            self._metrics.forget_target(key)
            log.info(ControlLog.TARGET_FORGOTTEN, namespace=key.namespace, deployment=key.name)

    def _drop(self, info: TargetInfo) -> None:
        """A target whose Deployment lost every source annotation (others remain): stop scaling it."""
        key = info.key
        self._invalid.pop(key, None)
        entry = self._workers.pop(key, None)
        if entry is not None:
            entry[1].cancel()
        self._metrics.forget_target(key)
        log.info(ControlLog.TARGET_DROPPED, namespace=key.namespace, deployment=key.name)
        self._send_event(
            info,
            type="Normal",
            reason=EventReason.NO_LONGER_A_TARGET,
            message="no longer a target: no source annotation; replicas left as they are",
        )

    async def _read_lag(self, policies: Mapping[TargetKey, ScalingPolicy]) -> dict[TargetKey, GroupResult]:
        """Every Kafka target's partitions, in one batch per cluster (``_kafka_cluster``), concurrently."""
        by_cluster: dict[str, dict[TargetKey, GroupRead]] = {}
        results: dict[TargetKey, GroupResult] = {}
        for key, policy in policies.items():
            read = trigger_reads.group_read(key, policy, self._triggers)
            if not isinstance(read, GroupRead):
                if read is not None:
                    results[key] = read
                continue
            cluster = self._kafka_cluster(policy)
            if cluster is None:
                results[key] = errors.KafkaError(
                    "no Kafka bootstrap: set --kafka-bootstrap or the kafka-bootstrap annotation"
                )
                continue
            by_cluster.setdefault(cluster, {})[key] = read

        async def read_one(cluster: str, wanted: dict[TargetKey, GroupRead]) -> None:
            groups = sorted(set(wanted.values()), key=lambda g: (g.group, g.topics))
            try:
                async with asyncio.timeout(max(self.interval * 0.8, 0.5)):
                    answer = await self._lag.read(bootstrap=cluster, groups=groups)
            except TimeoutError:
                answer = {
                    g: errors.KafkaUnavailable(f"no answer from {cluster} within the tick") for g in groups
                }
            except errors.KafkaError as exc:
                answer = dict.fromkeys(groups, exc)
            for key, group in wanted.items():
                results[key] = answer.get(
                    group, errors.KafkaError(f"group {group.group!r} missing from the read")
                )

        async with asyncio.TaskGroup() as reads:
            for cluster, wanted in by_cluster.items():
                reads.create_task(read_one(cluster, wanted))
        return results

    async def _read_sources(
        self, policies: Mapping[TargetKey, ScalingPolicy]
    ) -> Mapping[TargetKey, backlogs.SourceFigures]:
        """Every RabbitMQ, Redis and NATS target's figures, in the same tick as the Kafka reads."""
        wanted = {k: p.sources for k, p in policies.items() if backlogs.uses_backlog_sources(p.sources)}
        if not wanted:
            return {}
        if self._sources is None:
            why = "no RabbitMQ / Redis / NATS reader in this controller"
            missing = backlogs.SourceFigures(rabbitmq_error=why, redis_error=why, nats_error=why)
            return dict.fromkeys(wanted, missing)
        try:
            async with asyncio.timeout(max(self.interval * 0.8, 0.5)):
                return await self._sources.read(targets=wanted)
        except TimeoutError:
            why = "no answer within the tick"
            late = backlogs.SourceFigures(rabbitmq_error=why, redis_error=why, nats_error=why)
            return dict.fromkeys(wanted, late)

    def _kafka_cluster(self, policy: ScalingPolicy) -> str | None:
        """The key Kafka reads are batched by: the target's Kafka connection name, or
        ``<connection>@<brokers>`` when a kafka-bootstrap annotation names the brokers (that connection's
        TLS and credentials, these brokers); None when the default connection has no bootstrap."""
        if policy.kafka_bootstrap:
            return f"{policy.kafka_connection}@{','.join(policy.kafka_bootstrap)}"
        if policy.kafka_connection == "default" and self._default_bootstrap is None:
            return None
        return policy.kafka_connection

    # --- Events -------------------------------------------------------------------------------------------
    def _report_invalid(self, info: TargetInfo, error: errors.PolicyError) -> None:
        key = info.key
        problems = frozenset(error.problems)
        if self._invalid.get(key) == problems:
            return
        self._invalid[key] = problems
        self._metrics.errors.labels(EventReason.INVALID_ANNOTATIONS).inc()
        log.warning(
            ControlLog.ANNOTATIONS_INVALID, namespace=key.namespace, deployment=key.name, problems=str(error)
        )
        self._send_event(
            info,
            type="Warning",
            reason=EventReason.INVALID_ANNOTATIONS,
            message=f"replicas left untouched: {error}",
        )

    def _send_event(self, info: TargetInfo, *, type: str, reason: str, message: str) -> None:
        async def send() -> None:
            try:
                await self._scaler.event(
                    target=info.key, uid=info.uid, type=type, reason=reason, message=message, action="Decide"
                )
            except errors.AutoscalerError as exc:
                log.warning(ControlLog.EVENT_FAILED, reason=reason, error=str(exc))

        if self._group is None:
            raise RuntimeError("the control loop is not running")
        task = self._group.create_task(send(), name=f"event {info.key} {reason}")
        self._event_tasks.add(task)
        task.add_done_callback(self._event_tasks.discard)
