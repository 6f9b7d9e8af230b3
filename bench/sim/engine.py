"""The discrete-time simulator: a trace's arrivals against a worker model, one scaling policy in the loop.

Every step (``trace.step``, 100 ms): the step's arrivals join the backlog; pods whose start delay has passed
turn ready; ready workers take records off the backlog; the policy sees what a controller would see and
answers the replica count it wants (its own ticks, polls and windows are its business); pods are created or
removed at once, each new pod turning ready after a start delay drawn from the worker model.

Kafka: the backlog is per partition (arrivals spread evenly, like a round-robin producer); at most one
consumer per partition, partitions split into contiguous ranges over ``min(ready, partitions)`` consumers
(Kafka's range assignor), extra replicas idle. A consumer commits what it processed at once, so the
committed offset is the processed count and the lag is exactly the backlog.

HTTP: one queue of requests; each ready replica serves up to ``concurrency`` requests at once, each for
``service_time`` seconds; the concurrency a controller sees is queued + in flight, and a request arriving
while no replica is ready is a cold request (the activator pokes the controller at once).

Measured: replica-seconds (pods existing, starting or ready: what the platform pays), the age of every
record when it leaves the backlog (Kafka: processed; HTTP: dispatched to a replica), the largest backlog,
the scale changes, the direction reversals of each burst (from its first scale-up), and the time from the
trace's last arrival to zero replicas. Everything is deterministic for a seed.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from bench.sim.traces import Trace


@dataclass(frozen=True)
class WorkerModel:
    """Per-replica throughput in records/s (``drawn``: exponential per-record times, i.e. Poisson
    completions per step; otherwise exactly ``throughput`` per second); pod start delay = ``start_min`` +
    an exponential with mean ``start_extra`` seconds; Kafka partitions; HTTP concurrency and service time;
    ``rebalance_pause``: seconds every consumer stops when the group's membership changes (an eager
    rebalance: members rejoin on their next heartbeat).

    Replaying a measured run (``bench.sim.validate``): ``start_delays`` are the start delays of its
    scale-ups in order (the k-th scale-up's pods take the k-th; later ones the model's), and ``stopped`` the
    (from, to) seconds in which its group consumed nothing (rebalances), replacing ``rebalance_pause``."""

    throughput: float = 20.0
    drawn: bool = True
    start_min: float = 3.0
    start_extra: float = 2.0
    partitions: int = 12
    concurrency: int = 10
    service_time: float = 0.5
    rebalance_pause: float = 0.0
    start_delays: tuple[float, ...] = ()
    stopped: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        if self.throughput <= 0 or self.partitions < 1 or self.concurrency < 1 or self.service_time <= 0:
            raise ValueError(
                "throughput and service_time must be > 0, partitions and concurrency at least 1, got "
                f"{self.throughput}, {self.service_time}, {self.partitions}, {self.concurrency}"
            )
        if self.start_min < 0 or self.start_extra < 0 or self.rebalance_pause < 0:
            raise ValueError("start_min, start_extra and rebalance_pause must be >= 0 seconds")
        if any(d < 0 for d in self.start_delays) or any(b < a for a, b in self.stopped):
            raise ValueError("start_delays must be >= 0 and every stopped window (from, to) have from <= to")

    def stopped_at(self, t: float) -> bool:
        return any(a < t <= b + 1e-9 for a, b in self.stopped)


@dataclass(frozen=True)
class View:
    """What a controller can observe at the end of a step.

    ``spec``: replicas asked for (the Deployment's spec.replicas); ``existing``: pods that exist (starting
    or ready, the scale status); ``ready``: ready pods. Kafka: ``committed``/``end`` offsets per partition.
    HTTP: ``concurrency`` (queued + in flight) and ``cold`` (a request waits with no ready replica)."""

    t: float
    spec: int
    existing: int
    ready: int
    committed: tuple[int, ...]
    end: tuple[int, ...]
    concurrency: int
    cold: bool

    @property
    def backlog(self) -> int:
        return sum(self.end) - sum(self.committed)


class Policy(Protocol):
    """A scaling policy in the loop: called every step, answers the replica count it wants now."""

    name: str

    def step(self, view: View) -> int: ...


@dataclass(frozen=True)
class Sample:
    t: float
    spec: int
    ready: int
    backlog: int


@dataclass
class Run:
    """The outcome of one policy on one trace."""

    policy: str
    trace: str
    replica_seconds: float
    backlog_age_p50_s: float
    backlog_age_p99_s: float
    max_backlog: int
    scale_changes: int
    time_to_zero_s: float | None
    reversals_per_burst: tuple[int, ...]
    arrived: int
    processed: int
    left: int
    samples: list[Sample] = field(repr=False)

    def metrics(self) -> dict[str, float | int | None]:
        return {
            "replica_seconds": round(self.replica_seconds, 1),
            "backlog_age_p50_s": round(self.backlog_age_p50_s, 2),
            "backlog_age_p99_s": round(self.backlog_age_p99_s, 2),
            "max_backlog": self.max_backlog,
            "scale_changes": self.scale_changes,
            "time_to_zero_s": None if self.time_to_zero_s is None else round(self.time_to_zero_s, 1),
        }


class _Ages:
    """Records' ages when they leave the backlog, as a histogram of ``step``-wide bins."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.counts: list[int] = []

    def add(self, age: float, count: int) -> None:
        index = max(0, round(age / self.step))
        if index >= len(self.counts):
            self.counts.extend([0] * (index + 1 - len(self.counts)))
        self.counts[index] += count

    def quantile(self, q: float) -> float:
        total = sum(self.counts)
        if total == 0:
            return 0.0
        rank = q * total
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return index * self.step
        return (len(self.counts) - 1) * self.step


def simulate(trace: Trace, model: WorkerModel, policy: Policy, *, seed: int = 1) -> Run:
    """Replays ``trace`` against ``model`` with ``policy`` deciding; deterministic for a seed."""
    rng = np.random.default_rng(seed)
    dt = trace.step
    kafka = trace.kind == "kafka"
    parts = model.partitions if kafka else 1
    queues: list[deque[list[float]]] = [deque() for _ in range(parts)]  # [arrival_t, count] FIFO
    end = [0] * parts
    committed = [0] * parts
    in_service: deque[tuple[float, int]] = deque()  # HTTP: (finish_t, count)
    serving = 0
    ready_at: list[float] = []  # one per existing pod, in creation order
    carry: list[float] = []  # fixed throughput: the fraction of a record each consumer carries over
    ages = _Ages(dt)
    spec = 0
    replica_seconds = 0.0
    max_backlog = 0
    changes: list[tuple[float, int]] = []  # (time, +1 up / -1 down)
    samples: list[Sample] = []
    rotate = 0
    last_arrival = max((i for i, n in enumerate(trace.arrivals) if n), default=-1)
    zero_at: float | None = None
    members = 0
    paused_until = -1.0
    scale_ups = 0

    for i, arriving in enumerate(trace.arrivals):
        t = i * dt
        done_t = t + dt
        # Arrivals, spread evenly over the partitions starting at a rotating one.
        if arriving:
            base, extra = divmod(arriving, parts)
            for k in range(parts):
                n = base + (1 if (k - rotate) % parts < extra else 0)
                if n:
                    queues[k].append([t + dt / 2, n])
                    end[k] += n
            rotate = (rotate + extra) % parts
        ready = sum(1 for at in ready_at if at <= done_t)
        if kafka:
            consumers = min(ready, parts)
            if consumers != members:
                members = consumers
                paused_until = t + model.rebalance_pause if model.rebalance_pause else -1.0
            if model.stopped_at(done_t) if model.stopped else done_t <= paused_until + 1e-9:
                consumers = 0
            if len(carry) < consumers:
                carry.extend([0.0] * (consumers - len(carry)))
            for c in range(consumers):
                if model.drawn:
                    capacity = int(rng.poisson(model.throughput * dt))
                else:
                    budget = model.throughput * dt + carry[c]
                    capacity = int(budget)
                    carry[c] = budget - capacity
                owned = range(c * parts // consumers, (c + 1) * parts // consumers)
                _consume(queues, committed, owned, capacity, done_t, ages)
        else:
            while in_service and in_service[0][0] <= done_t + 1e-9:
                serving -= in_service.popleft()[1]
            free = ready * model.concurrency - serving
            if free > 0 and queues[0]:
                admitted = _consume(queues, committed, range(1), free, done_t, ages)
                if admitted:
                    in_service.append((done_t + model.service_time, admitted))
                    serving += admitted
        backlog = sum(end) - sum(committed)
        max_backlog = max(max_backlog, backlog)
        replica_seconds += len(ready_at) * dt
        view = View(
            t=done_t,
            spec=spec,
            existing=len(ready_at),
            ready=ready,
            committed=tuple(committed),
            end=tuple(end),
            concurrency=backlog + serving,
            cold=not kafka and backlog > 0 and ready == 0,
        )
        desired = max(0, policy.step(view))
        if desired != spec:
            changes.append((done_t, 1 if desired > spec else -1))
            if desired > len(ready_at):
                replayed = model.start_delays[scale_ups] if scale_ups < len(model.start_delays) else None
                scale_ups += 1
                for _ in range(desired - len(ready_at)):
                    delay = (
                        replayed
                        if replayed is not None
                        else model.start_min
                        + (float(rng.exponential(model.start_extra)) if model.start_extra else 0.0)
                    )
                    ready_at.append(done_t + delay)
            else:
                # A ReplicaSet removes pods not yet ready first, then the newest.
                order = sorted(range(len(ready_at)), key=lambda k: (ready_at[k] <= done_t, -k))
                keep = sorted(order[len(ready_at) - desired :])
                ready_at = [ready_at[k] for k in keep]
            spec = desired
        if i >= last_arrival and spec == 0 and zero_at is None and last_arrival >= 0:
            zero_at = done_t
        elif spec != 0:
            zero_at = None
        if i % round(1 / dt) == 0:
            samples.append(Sample(done_t, spec, ready, backlog))

    left = sum(end) - sum(committed)
    for k in range(parts):
        for arrived_t, count in queues[k]:
            ages.add(trace.duration - arrived_t, int(count))
    last_t = (last_arrival + 1) * dt
    return Run(
        policy=policy.name,
        trace=trace.name,
        replica_seconds=replica_seconds,
        backlog_age_p50_s=ages.quantile(0.50),
        backlog_age_p99_s=ages.quantile(0.99),
        max_backlog=max_backlog,
        scale_changes=len(changes),
        time_to_zero_s=None if zero_at is None else max(0.0, zero_at - last_t),
        reversals_per_burst=reversals_per_burst(changes, trace.bursts),
        arrived=sum(trace.arrivals),
        processed=sum(committed),
        left=left,
        samples=samples,
    )


def _consume(
    queues: list[deque[list[float]]],
    committed: list[int],
    owned: range,
    capacity: int,
    now: float,
    ages: _Ages,
) -> int:
    """Takes up to ``capacity`` records from the owned partitions, oldest head first; returns how many."""
    taken = 0
    while taken < capacity:
        heads = [k for k in owned if queues[k]]
        if not heads:
            break
        k = min(heads, key=lambda p: queues[p][0][0])
        head = queues[k][0]
        n = min(int(head[1]), capacity - taken)
        ages.add(now - head[0], n)
        head[1] -= n
        if head[1] == 0:
            queues[k].popleft()
        committed[k] += n
        taken += n
    return taken


def reversals_per_burst(
    changes: list[tuple[float, int]], bursts: tuple[tuple[float, float], ...]
) -> tuple[int, ...]:
    """For each burst, how often the scale direction reversed from its first scale-up to the next burst's
    start (up then down is one reversal: no flapping; up, down, up is two). Scale-downs before a burst's
    first scale-up finish the previous burst (a count still coming down from it) and are not its own."""
    result = []
    for index, (start, _) in enumerate(bursts):
        until = bursts[index + 1][0] if index + 1 < len(bursts) else float("inf")
        directions = [d for at, d in changes if start <= at < until]
        while directions and directions[0] < 0:
            directions.pop(0)
        result.append(sum(1 for a, b in itertools.pairwise(directions) if a != b))
    return tuple(result)
