"""(policy, observation, state, now) -> (Decision, new state): the whole scaling decision, pure.

Each source reads into a ``SourceReading`` with a small function of its own (``_kafka``, ``_http``); the
target takes the largest count of its readable sources. The numbers go into the Decision;
``policy.reasons.explain`` renders them as English.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from autoscaler.model import (
    Cap,
    Decision,
    Observation,
    RateSizing,
    Rule,
    Source,
    SourceReading,
    TopicPartition,
)
from autoscaler.policy import backlog, lag, rates
from autoscaler.policy.annotations import ScalingPolicy
from autoscaler.policy.rates import Rates

Committed = tuple[tuple[TopicPartition, int], ...]
History = tuple[tuple[datetime, int], ...]
KEEP_UTILIZATION = 0.9  # drain-within: a scale-down must fit the load at 90 % of the measured rate


@dataclass(frozen=True, slots=True)
class DecisionState:
    """What a target's next decision needs from the previous ones.

    ``idle_since``: when the activation lag first became <= activation-lag in the current idle run (None
    while active). ``history``: (time, raw desired count) within the scale-down window, oldest first; an
    entry is dropped once a newer one is at least as high (only the window's highest count is read).
    ``committed``: committed offsets of the previous read, kept only with exclude-persistent-lag.
    An empty history means nothing was seen yet: the next decision counts the current replicas as seen.
    ``rates``: the arrival and per-replica processing rates measured so far (drain-within only).
    ``policy.document`` writes and reads it as JSON.
    """

    idle_since: datetime | None
    history: History
    committed: Committed
    rates: Rates = field(default_factory=Rates)

    @classmethod
    def initial(cls, last_active: datetime | None) -> DecisionState:
        """The state of a target first seen, seeded from its ``last-active`` annotation."""
        return cls(idle_since=last_active, history=(), committed=())


def decide(
    policy: ScalingPolicy, observation: Observation, state: DecisionState, now: datetime
) -> tuple[Decision, DecisionState]:
    """The replica count the target should have now, and the state for the next call.

    ``now`` must be timezone-aware. Missing data (unreadable lag, no concurrency report) holds the current
    count, never lowers it, and leaves the idle timer where it was.
    """
    if now.tzinfo is None:
        raise ValueError("now must be a timezone-aware datetime")
    current = observation.current_replicas
    kafka, committed, measured = _kafka(policy, observation, state, now)
    readings = tuple(r for r in (kafka, _http(policy, observation)) if r is not None)
    readings += backlog.readings(policy.sources, observation)

    readable = [r for r in readings if r.readable]
    all_readable = len(readable) == len(readings)
    active = any(r.active for r in readable)
    raw = max((r.replicas for r in readable), default=0)
    # drain-within: the window remembers the count with headroom, and scale-downs wait while load rises.
    held = max((_held(r) for r in readable), default=0)
    rising = any(r.rate is not None and r.rate.rising for r in readable)

    if active:
        idle_since = None
    elif all_readable:
        idle_since = state.idle_since if state.idle_since is not None and state.idle_since <= now else now
    else:
        idle_since = state.idle_since
    cutoff = now - policy.scale_down_window
    history = tuple((t, n) for t, n in state.history if cutoff <= t <= now)
    if not state.history and policy.scale_down_window and current > 0:
        # Nothing seen yet (first decision, or after a controller restart): the running count counts as
        # seen now, so a restart never scales down before a full window of readings.
        history = ((now, current),)
    if all_readable:
        history = _with_newest(history, now, held)
    new_state = DecisionState(idle_since=idle_since, history=history, committed=committed, rates=measured)

    idle_for = None if idle_since is None else now - idle_since
    # The highest count seen in the window matters only to a running target's scale-down.
    window_max = max(max((n for _, n in history), default=0), 1) if current > 0 else 0
    to_zero = policy.scale_to_zero_after if policy.min_replicas == 0 else None
    if policy.paused_replicas is not None:
        desired, rule = policy.paused_replicas, Rule.PAUSED_REPLICAS
    elif policy.paused:
        desired, rule = current, Rule.PAUSED
    elif not all_readable:
        desired, rule = _hold_on_missing_data(policy, current, raw, active)
    else:
        desired, rule = _scale(current, raw, active, idle_for, to_zero, window_max, rising=rising)
    final, final_rule = desired, rule
    if rule is not Rule.PAUSED and rule is not Rule.PAUSED_REPLICAS:
        if desired < policy.min_replicas:
            final, final_rule = policy.min_replicas, Rule.CLAMP_MIN
        elif desired > policy.max_replicas:
            final, final_rule = policy.max_replicas, Rule.CLAMP_MAX
    decision = Decision(
        desired_replicas=final,
        total_lag=0 if kafka is None else kafka.backlog,
        active=active,
        rule=final_rule,
        idle_since=idle_since,
        current_replicas=current,
        readings=readings,
        proposed=desired,
        proposed_rule=rule,
        idle_for=idle_for,
        window_max=window_max,
        scale_down_window=policy.scale_down_window,
        scale_to_zero_after=to_zero,
    )
    return decision, new_state


def _with_newest(history: History, now: datetime, count: int) -> History:
    """``history`` with ``(now, count)`` appended, minus the entries it outlives at no lower count.

    Only the window's highest count is ever read, and an entry older than a later one with a count at
    least as high can never be that maximum again: it leaves the window first. What remains is strictly
    decreasing in count, so the state stays a few entries long instead of one per tick of the window.
    """
    kept = len(history)
    while kept and history[kept - 1][1] <= count and history[kept - 1][0] <= now:
        kept -= 1
    return (*history[:kept], (now, count))


def _kafka(
    policy: ScalingPolicy, observation: Observation, state: DecisionState, now: datetime
) -> tuple[SourceReading | None, Committed, Rates]:
    """The Kafka reading, the committed offsets to remember for exclude-persistent-lag, and the rates."""
    committed, measured = state.committed, state.rates
    if not policy.uses_kafka:
        return None, committed, measured
    if observation.partitions is None:
        why = observation.kafka_error or "no offsets were read"
        return SourceReading(Source.KAFKA, error=why), committed, measured
    result = lag.compute(policy, observation.partitions, dict(committed))
    if policy.exclude_persistent_lag:
        committed = tuple(
            sorted((p.topic_partition, p.committed) for p in result.partitions if p.committed is not None)
        )
    sizing_lag, per_replica, count = result.sizing_lag, policy.lag_per_replica, result.partition_count
    needed = _ceil_div(sizing_lag, per_replica)
    rate = None
    if policy.drain_within is not None:
        measured, rate = _rates(policy.drain_within, observation, result, measured, now)
        if rate.needed is not None:
            needed = rate.needed
    cap: Cap | None
    if policy.even_partition_distribution:
        cap = Cap.EVEN_DISTRIBUTION
        if rate is not None and rate.needed is not None:
            replicas = 0 if needed == 0 else _smallest_divisor_at_least(count, needed)
        else:
            replicas = 0 if sizing_lag == 0 else _smallest_covering_divisor(count, per_replica, sizing_lag)
    elif policy.limit_to_partitions_with_lag:
        cap, replicas = Cap.PARTITIONS_WITH_LAG, min(needed, result.partitions_with_lag)
    elif not policy.allow_idle_consumers:
        cap, replicas = Cap.PARTITIONS, min(needed, count)
    else:
        cap, replicas = None, needed
    if rate is not None and rate.keep is not None:
        limits = {Cap.PARTITIONS_WITH_LAG: result.partitions_with_lag, Cap.PARTITIONS: count}
        limit = None if cap is None else limits.get(cap)
        keep = rate.keep if cap is not Cap.EVEN_DISTRIBUTION else _smallest_divisor_at_least(count, rate.keep)
        rate = replace(rate, keep=max(replicas, keep if limit is None else min(keep, limit)))
    reading = SourceReading(
        Source.KAFKA,
        backlog=result.activation_lag,
        sizing_backlog=sizing_lag,
        per_replica=per_replica,
        needed=needed,
        replicas=replicas,
        activation=policy.activation_lag,
        cap=cap,
        partitions=count,
        rate=rate,
    )
    return reading, committed, measured


def _rates(
    drain_within: timedelta,
    observation: Observation,
    result: lag.LagResult,
    measured: Rates,
    now: datetime,
) -> tuple[Rates, RateSizing]:
    """One more reading for the rate estimator (work added: end offsets; done: end − lag; consumers: the
    ready replicas, at most one per partition), and the counts the rates give."""
    added = sum(p.end for p in observation.partitions or () if p.end is not None)
    ready = observation.ready_replicas
    consumers = 0 if ready is None else min(ready, result.partition_count)
    measured = rates.observe(measured, rates.Reading(now, added, added - result.activation_lag, consumers))
    backlog = result.sizing_lag
    needed = rates.replicas_for(measured, backlog=backlog, drain_within=drain_within)
    keep = rates.replicas_for(
        measured, backlog=backlog, drain_within=drain_within, utilization=KEEP_UTILIZATION
    )
    return measured, RateSizing(
        drain_within=drain_within,
        arrival=measured.arrival,
        per_replica=measured.per_replica,
        needed=needed,
        keep=keep,
        rising=measured.rising,
    )


def _held(reading: SourceReading) -> int:
    """The count a reading holds against scale-down: its replicas, or drain-within's count with headroom."""
    if reading.rate is not None and reading.rate.keep is not None:
        return max(reading.replicas, reading.rate.keep)
    return reading.replicas


def _smallest_divisor_at_least(partitions: int, wanted: int) -> int:
    """The smallest f dividing the partition count with f >= wanted; the count if none."""
    return next((f for f in range(1, partitions + 1) if partitions % f == 0 and f >= wanted), partitions)


def _smallest_covering_divisor(partitions: int, per_replica: int, sizing_lag: int) -> int:
    """The smallest f dividing the partition count with f × lag-per-replica >= lag; the count if none."""
    for factor in range(1, partitions + 1):
        if partitions % factor == 0 and factor * per_replica >= sizing_lag:
            return factor
    return partitions


def _http(policy: ScalingPolicy, observation: Observation) -> SourceReading | None:
    if not policy.uses_http:
        return None
    concurrency = observation.concurrency
    if concurrency is None:
        return SourceReading(Source.HTTP, error="no concurrency report")
    per_replica = policy.concurrency_per_replica
    needed = _ceil_div(concurrency, per_replica)
    return SourceReading(
        Source.HTTP,
        backlog=concurrency,
        sizing_backlog=concurrency,
        per_replica=per_replica,
        needed=needed,
        replicas=needed,
        started=observation.requests_started,
        peak=observation.peak_concurrency,
    )


def _hold_on_missing_data(policy: ScalingPolicy, current: int, raw: int, active: bool) -> tuple[int, Rule]:
    """Some source could not be read: keep current (or raise to fallback-replicas); readable sources may
    still scale up, never down."""
    fallback = policy.fallback_replicas
    if fallback is not None and fallback > current:
        desired, rule = fallback, Rule.FALLBACK
    else:
        desired, rule = current, Rule.HOLD_UNREADABLE
    wanted = (max(raw, 1) if active else 0) if current == 0 else raw
    if wanted > desired:
        return wanted, Rule.ACTIVATE if current == 0 else Rule.SCALE_UP
    return desired, rule


def _scale(
    current: int,
    raw: int,
    active: bool,
    idle_for: timedelta | None,
    to_zero: timedelta | None,
    window_max: int,
    *,
    rising: bool = False,
) -> tuple[int, Rule]:
    if current == 0:
        return (max(raw, 1), Rule.ACTIVATE) if active else (0, Rule.HOLD)
    if to_zero is not None and idle_for is not None and idle_for >= to_zero:
        return 0, Rule.SCALE_TO_ZERO
    # While replicas run, a raw count of 0 counts as 1: only the idle timer takes a target to zero.
    wanted = max(raw, 1)
    if wanted > current:
        return wanted, Rule.SCALE_UP
    if window_max < current and not rising:
        return window_max, Rule.SCALE_DOWN_WINDOW
    return current, Rule.HOLD


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)
