"""Arrival rate and processing rate per replica from successive backlog readings: pure, frozen state.

A reading is what one tick saw of a target: the work ever added (Kafka: the sum of end offsets), the work
ever done (the sum of committed offsets) and the replicas consuming (ready, at most one per partition).

- Arrival rate: the progress of the work added between two readings over the time between them,
  smoothed exponentially (time constant ``arrival_smoothing``).
- Processing rate per replica: the progress of the work done ÷ the replicas consuming, smoothed (time
  constant ``capacity_smoothing``). It measures capacity only when the replicas had more work than they
  could take: a sample counts when the backlog stayed at or above one record per consuming replica since
  the previous sample (otherwise they were waiting for work and the sample would understate them, and an
  understated rate keeps too many replicas forever), or replaces a known estimate it exceeds (doing more
  proves the capacity). The replicas of a sample are the most that consumed during it, so a replica
  joining midway never inflates the rate. Committed offsets move in jumps
  (a consumer commits every few seconds), so a sample spans from the last reading at which the work done
  moved: readings with no progress add no sample and keep the estimate (a rebalance, a commit interval, a
  stuck consumer); nothing is ever divided by zero time or zero replicas.
- Offsets that go backwards (a topic recreated, offsets reset) restart the measurement from that reading,
  keeping the per-replica estimate.

- Trend: a slow average of the arrival rate (``TREND_SMOOTHING``); ``rising`` says the fast one is clearly
  above it, i.e. load is still growing (the decision holds scale-downs then).

``replicas_for`` sizes from the rates: ``ceil((arrival + backlog / drain_within) / per_replica)``, or None
while either rate is unknown (no history yet, no ready replica so far) so the caller falls back to the
fixed thresholds; at least 1 while work waits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

ARRIVAL_SMOOTHING = timedelta(seconds=10)
TREND_SMOOTHING = timedelta(seconds=60)
CAPACITY_SMOOTHING = timedelta(seconds=30)
RISING = 1.05  # the arrival rate is rising when above this × its slow average (and by 0.5 records/s)
_NEGLIGIBLE = 1e-9  # records/s: a rate at or below this is treated as unknown


@dataclass(frozen=True, slots=True)
class Reading:
    """One tick's view of a target: work ever added and ever done, and the replicas consuming."""

    at: datetime
    added: int
    done: int
    consumers: int

    @property
    def backlog(self) -> int:
        return max(0, self.added - self.done)


@dataclass(frozen=True, slots=True)
class Rates:
    """The estimator's state. ``arrival`` (records/s) and ``per_replica`` (records/s per consuming
    replica) are None while unknown. ``last`` is the previous reading; ``anchor`` the last reading at which
    the work done moved, with the most consumers and the smallest backlog seen since it."""

    last: Reading | None = None
    anchor: Reading | None = None
    most_consumers: int = 0
    least_backlog: int = 0
    arrival: float | None = None
    per_replica: float | None = None
    arrival_slow: float | None = None

    @property
    def rising(self) -> bool:
        """The arrival rate is clearly above its slow average (``TREND_SMOOTHING``): load is growing."""
        fast, slow = self.arrival, self.arrival_slow
        return fast is not None and slow is not None and fast > slow * RISING + 0.5


def observe(
    rates: Rates,
    reading: Reading,
    *,
    arrival_smoothing: timedelta = ARRIVAL_SMOOTHING,
    capacity_smoothing: timedelta = CAPACITY_SMOOTHING,
) -> Rates:
    """The state after one more reading. Readings not later than the previous one are ignored."""
    last = rates.last
    if last is None:
        return _anchored(Rates(per_replica=rates.per_replica), reading)
    elapsed = (reading.at - last.at).total_seconds()
    if elapsed <= 0:
        return rates
    if reading.added < last.added or reading.done < last.done:
        return _anchored(Rates(per_replica=rates.per_replica), reading)
    arrival = _smooth(rates.arrival, (reading.added - last.added) / elapsed, elapsed, arrival_smoothing)
    slow = _smooth(rates.arrival_slow, arrival, elapsed, TREND_SMOOTHING)
    most = max(rates.most_consumers, reading.consumers)
    least = min(rates.least_backlog, reading.backlog)
    anchor = rates.anchor
    if anchor is None or reading.done == anchor.done:
        # No work done since the anchor: no sample, the estimate holds.
        return replace(
            rates, last=reading, arrival=arrival, arrival_slow=slow, most_consumers=most, least_backlog=least
        )
    per_replica = rates.per_replica
    span = (reading.at - anchor.at).total_seconds()
    if most > 0 and span > 0:
        sample = (reading.done - anchor.done) / span / most
        if least >= most:
            per_replica = _smooth(per_replica, sample, span, capacity_smoothing)
        elif per_replica is not None and sample > per_replica:
            per_replica = sample
    return _anchored(replace(rates, arrival=arrival, arrival_slow=slow, per_replica=per_replica), reading)


def _anchored(rates: Rates, reading: Reading) -> Rates:
    return replace(
        rates, last=reading, anchor=reading, most_consumers=reading.consumers, least_backlog=reading.backlog
    )


def _smooth(previous: float | None, sample: float, elapsed: float, constant: timedelta) -> float:
    if previous is None:
        return sample
    tau = constant.total_seconds()
    weight = 1.0 if tau <= 0 else 1.0 - math.exp(-elapsed / tau)
    return previous + weight * (sample - previous)


def replicas_for(
    rates: Rates, *, backlog: int, drain_within: timedelta, utilization: float = 1.0
) -> int | None:
    """Replicas to take the arrivals and drain ``backlog`` within ``drain_within`` at the measured rate
    per replica (× ``utilization``, in (0, 1]: a lower value leaves headroom); None while a rate is unknown.
    Never 0 while work waits."""
    arrival, per_replica = rates.arrival, rates.per_replica
    if arrival is None or per_replica is None or per_replica <= _NEGLIGIBLE:
        return None
    seconds = drain_within.total_seconds()
    if seconds <= 0:
        raise ValueError(f"drain_within must be > 0, got {drain_within}")
    if not 0 < utilization <= 1:
        raise ValueError(f"utilization must be in (0, 1], got {utilization}")
    needed = (max(arrival, 0.0) + max(backlog, 0) / seconds) / (per_replica * utilization)
    count = math.ceil(needed - 1e-9) if needed < 2**31 else 2**31 - 1
    return max(count, 1) if backlog > 0 else count
