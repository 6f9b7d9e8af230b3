"""One worker per target: a task that holds the target's decision state and its latest inputs.

The tick and the pokes only post inputs and wake the worker; the worker decides with the latest inputs and
applies the decision (scale patch, Event, last-active write) before it looks at its inputs again. Inputs
posted while a write is in flight are decided right after it, so nothing waits for the next tick, and a
target never has two writes in flight. Everything here belongs to the worker's own task.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

import structlog

from autoscaler import errors
from autoscaler.control.backlogs import SourceFigures
from autoscaler.control.ports import EventSender, Scaler, TargetInfo
from autoscaler.model import Decision, EventReason, Observation, PartitionOffsets, TargetKey
from autoscaler.observability.log_events import ControlLog
from autoscaler.observability.metrics import ControllerMetrics
from autoscaler.policy import decide, reasons
from autoscaler.policy.annotations import ScalingPolicy

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Inputs:
    """What the next decision of one target is made from, as last posted by the tick or a poke."""

    info: TargetInfo
    policy: ScalingPolicy
    partitions: tuple[PartitionOffsets, ...] | None = None
    kafka_error: str | None = None
    figures: SourceFigures = field(default_factory=SourceFigures)
    concurrency: int | None = None
    started: int = 0
    peak: int = 0
    poked: bool = False
    tick: int = 0


class TargetWorker:
    def __init__(
        self,
        key: TargetKey,
        policy: ScalingPolicy,
        *,
        scaler: Scaler,
        metrics: ControllerMetrics,
        wall_clock: Callable[[], datetime],
        send_event: EventSender,
    ) -> None:
        self.key = key
        self._scaler = scaler
        self._metrics = metrics
        self._wall_clock = wall_clock
        self._send_event = send_event
        self._log = log.bind(namespace=key.namespace, deployment=key.name)
        self._state = decide.DecisionState.initial(policy.last_active)
        self._persisted_last_active = policy.last_active
        self._inputs: Inputs | None = None
        self._decided_on: Inputs | None = None
        self._observed = 0.0
        self._wake = asyncio.Event()
        self._closing = False
        # Our last patch until the watch shows it: (counts the watch may still show, the count we wrote).
        self._written: tuple[frozenset[int], int] | None = None
        self.last_decision: Decision | None = None

    @property
    def inputs(self) -> Inputs | None:
        return self._inputs

    # --- posted by the loop -------------------------------------------------------------------------------
    def post(self, inputs: Inputs) -> None:
        """New inputs: the worker decides on them as soon as it is free (at once when idle)."""
        previous = self._inputs
        if inputs.policy.uses_kafka and inputs.partitions is None and inputs.kafka_error is not None:
            self._metrics.errors.labels(EventReason.LAG_UNAVAILABLE).inc()
            if previous is None or previous.kafka_error is None:
                self._log.warning(ControlLog.LAG_UNAVAILABLE, error=inputs.kafka_error)
                self._send_event(
                    inputs.info,
                    type="Warning",
                    reason=EventReason.LAG_UNAVAILABLE,
                    message=f"holding replicas while consumer-group lag cannot be read: {inputs.kafka_error}",
                )
        elif previous is not None and previous.kafka_error is not None and inputs.kafka_error is None:
            self._log.info(ControlLog.LAG_RECOVERED)
        self._source_outage(previous, inputs)
        if self._settled_on(inputs):
            self._inputs = inputs  # the freshest info for the next write's Event
            return
        self._inputs = self._carry_window(inputs)
        self._observed = time.perf_counter()
        self._wake.set()

    def _settled_on(self, inputs: Inputs) -> bool:
        """Whether deciding on ``inputs`` would repeat the last decision and write nothing: the target is at
        zero and was decided to stay there, everything was persisted, and every input is what that decision
        saw. Most of a large cluster's targets sit idle at zero; they cost one comparison per tick. Rates
        (drain-within) move with time, so such targets are always decided."""
        decided, last = self._decided_on, self.last_decision
        if decided is None or last is None or inputs.poked or inputs.started or inputs.peak:
            return False
        return (
            inputs.policy is decided.policy
            and inputs.policy.drain_within is None
            and inputs.info.replicas == 0
            and last.current_replicas == 0
            and last.desired_replicas == 0
            and not last.active
            and self._written is None
            and last.idle_since == self._persisted_last_active
            and inputs.info.ready_replicas == decided.info.ready_replicas
            and inputs.kafka_error == decided.kafka_error
            and inputs.concurrency == decided.concurrency
            and inputs.partitions == decided.partitions
            and inputs.figures == decided.figures
        )

    def poke(
        self, info: TargetInfo, policy: ScalingPolicy, concurrency: int | None, *, started: int, peak: int
    ) -> None:
        """A request waits for this target: decide now with the last Kafka reading and this concurrency."""
        base = self._inputs if self._inputs is not None else Inputs(info, policy)
        update = replace(
            base, info=info, policy=policy, concurrency=concurrency, started=started, peak=peak, poked=True
        )
        self._inputs = self._carry_window(update)
        self._observed = time.perf_counter()
        self._wake.set()

    def _carry_window(self, inputs: Inputs) -> Inputs:
        """Requests seen in report windows not decided on yet add up: activity is never lost to coalescing."""
        pending = self._inputs
        if pending is None or self._decided_on is pending or not (pending.started or pending.peak):
            return inputs
        return replace(inputs, started=inputs.started + pending.started, peak=max(inputs.peak, pending.peak))

    def close(self) -> None:
        """Finish the write in flight, if any, then stop."""
        self._closing = True
        self._wake.set()

    # --- the worker's task --------------------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._closing or self._inputs is None:
                return
            await self._step(self._inputs, self._observed)

    async def _step(self, inputs: Inputs, observed: float) -> None:
        self._decided_on = inputs
        info, policy = inputs.info, inputs.policy
        current = self._current(info.replicas)
        concurrency = inputs.concurrency
        if inputs.poked and concurrency is not None:
            concurrency = max(concurrency, 1)  # the poke itself is a request waiting
        observation = Observation(
            current_replicas=current,
            partitions=inputs.partitions if policy.uses_kafka else None,
            kafka_error=inputs.kafka_error,
            concurrency=concurrency,
            requests_started=inputs.started,
            peak_concurrency=inputs.peak,
            ready_replicas=info.ready_replicas,
            **inputs.figures.observation_fields(),
        )
        started = time.perf_counter()
        decision, self._state = decide.decide(policy, observation, self._state, self._wall_clock())
        self._metrics.decision_seconds.observe(time.perf_counter() - started)
        kafka_read = policy.uses_kafka and inputs.partitions is not None
        self._metrics.observe_target(
            self.key,
            desired=decision.desired_replicas,
            current=current,
            lag=decision.total_lag if kafka_read else None,
            concurrency=concurrency,
            active=decision.active,
            sources_up=tuple((r.source.value, r.error is None) for r in decision.readings),
        )
        previous = self.last_decision
        if previous is None or (previous.desired_replicas, previous.rule) != (
            decision.desired_replicas,
            decision.rule,
        ):
            self._log.info(
                ControlLog.DECISION_CHANGED,
                current=current,
                desired=decision.desired_replicas,
                rule=str(decision.rule),
                reason=reasons.explain(decision),
                lag=decision.total_lag,
                concurrency=concurrency,
                partitions=None if inputs.partitions is None else len(inputs.partitions),
                kafka_error=inputs.kafka_error,
                source=None if decision.source is None else str(decision.source),
                poked=inputs.poked,
                tick=inputs.tick,
            )
        self.last_decision = decision
        try:
            if decision.desired_replicas != current:
                await self._patch(info, current, decision, observed)
            if decision.idle_since != self._persisted_last_active:
                await self._scaler.set_last_active(target=self.key, when=decision.idle_since)
                self._persisted_last_active = decision.idle_since
        except errors.TargetGone:
            self._log.info(ControlLog.SCALE_TARGET_GONE)
        except errors.AutoscalerError as exc:
            self._metrics.errors.labels(type(exc).__name__).inc()
            self._log.warning(ControlLog.SCALE_FAILED, error=str(exc), kind=type(exc).__name__)

    def _source_outage(self, previous: Inputs | None, inputs: Inputs) -> None:
        """One LagUnavailable Warning when a RabbitMQ, Redis or NATS source of the target stops being
        readable (not one per tick); a log line when it is readable again."""
        error = inputs.figures.errors(inputs.policy.sources)
        before = None if previous is None else previous.figures.errors(previous.policy.sources)
        if error is not None:
            self._metrics.errors.labels(EventReason.LAG_UNAVAILABLE).inc()
            if before is None:
                self._log.warning(ControlLog.LAG_UNAVAILABLE, error=error)
                self._send_event(
                    inputs.info,
                    type="Warning",
                    reason=EventReason.LAG_UNAVAILABLE,
                    message=f"holding replicas while the backlog cannot be read: {error}",
                )
        elif before is not None:
            self._log.info(ControlLog.LAG_RECOVERED)

    def _current(self, seen: int) -> int:
        """The replica count: the watch's, or what we patched while the watch still shows an older count."""
        if self._written is not None:
            stale, after = self._written
            if seen in stale:
                return after
            self._written = None
        return seen

    async def _patch(self, info: TargetInfo, current: int, decision: Decision, observed: float) -> None:
        desired = decision.desired_replicas
        await self._scaler.scale(target=self.key, replicas=desired)
        stale = {info.replicas, current} | (self._written[0] if self._written is not None else set())
        self._written = (frozenset(stale - {desired}), desired)
        self._metrics.reaction_seconds.observe(time.perf_counter() - observed)
        reason, direction = _event_reason(current, desired)
        self._metrics.scale_patches.labels(self.key.namespace, self.key.name, direction).inc()
        self._log.info(ControlLog.TARGET_SCALED, reason=reason, replicas_from=current, replicas_to=desired)
        await self._scaler.event(
            target=self.key,
            uid=info.uid,
            type="Normal",
            reason=reason,
            action="Scale",
            message=f"{current} -> {desired} replicas ({decision.rule}): {reasons.explain(decision)}",
        )


def _event_reason(current: int, desired: int) -> tuple[EventReason, str]:
    if current == 0:
        return EventReason.ACTIVATED_FROM_ZERO, "from-zero"
    if desired == 0:
        return EventReason.SCALED_TO_ZERO, "to-zero"
    if desired > current:
        return EventReason.SCALED_UP, "up"
    return EventReason.SCALED_DOWN, "down"
