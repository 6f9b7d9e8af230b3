"""Value types shared by every layer, and the contract's vocabulary. Frozen, hashable, free of I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

# --- the contract's vocabulary: each word defined here once -------------------------------------------------

PREFIX: Final = "queue-autoscaler.dev/"
"""The prefix of every annotation the product reads or writes."""
LAST_ACTIVE_ANNOTATION: Final = PREFIX + "last-active"
"""Written by the controller on a target: when it last had work (RFC 3339)."""
REPORT_URL_ANNOTATION: Final = PREFIX + "report-url"
"""Written by the controller leader on its Lease: where activators POST their reports."""
REPORT_PATH: Final = "/v1/reports"
"""The path of the controller's report endpoint."""


class EventReason(StrEnum):
    """The ``reason`` of every Kubernetes Event the controller writes on a target."""

    SCALED_UP = "ScaledUp"
    SCALED_DOWN = "ScaledDown"
    SCALED_TO_ZERO = "ScaledToZero"
    ACTIVATED_FROM_ZERO = "ActivatedFromZero"
    INVALID_ANNOTATIONS = "InvalidAnnotations"
    LAG_UNAVAILABLE = "LagUnavailable"
    NO_LONGER_A_TARGET = "NoLongerATarget"


@dataclass(frozen=True, slots=True, order=True)
class TargetKey:
    """A scaled Deployment, by namespace and name."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True, order=True)
class TopicPartition:
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    """Offsets of one partition as read in one tick.

    ``committed`` is None when the group has no committed offset for the partition; ``end`` is None when the
    partition was absent from the end-offset answer; ``start`` (log start offset) is None when not read.
    """

    topic: str
    partition: int
    committed: int | None
    end: int | None
    start: int | None = None

    @property
    def topic_partition(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


@dataclass(frozen=True, slots=True)
class TargetConcurrency:
    """Requests an activator holds for one target: forwarded and not yet answered, and still queued; and
    what happened within the report's window (since the previous report): requests ``started`` and the
    ``peak`` of in-flight + queued. A request that starts and ends between two reports shows only there.
    """

    in_flight: int
    queued: int
    started: int = 0
    peak: int = 0

    @property
    def total(self) -> int:
        return self.in_flight + self.queued


@dataclass(frozen=True, slots=True)
class ConcurrencyReport:
    """What one activator replica reports to the controller leader.

    ``cold`` names targets for which a request arrived while no endpoint was ready: the controller decides
    for those at once instead of waiting for its next tick.
    """

    activator: str
    targets: dict[TargetKey, TargetConcurrency]
    cold: frozenset[TargetKey] = frozenset()

    def to_json(self) -> dict[str, object]:
        return {
            "activator": self.activator,
            "targets": {
                str(key): {"in_flight": c.in_flight, "queued": c.queued, "started": c.started, "peak": c.peak}
                for key, c in self.targets.items()
            },
            "cold": sorted(str(key) for key in self.cold),
        }

    @classmethod
    def from_json(cls, doc: object) -> ConcurrencyReport:
        """Parses a report; raises ValueError naming the first malformed field."""
        if not isinstance(doc, dict):
            raise ValueError("report must be a JSON object")
        activator = doc.get("activator")
        if not isinstance(activator, str) or not activator:
            raise ValueError("report.activator must be a non-empty string")
        raw_targets = doc.get("targets", {})
        if not isinstance(raw_targets, dict):
            raise ValueError("report.targets must be an object")
        targets: dict[TargetKey, TargetConcurrency] = {}
        for raw_key, raw_value in raw_targets.items():
            key = parse_target_key(raw_key)
            if not isinstance(raw_value, dict):
                raise ValueError(f"report.targets[{raw_key!r}] must be an object")
            # started and peak are absent from the reports of older activators: 0.
            counts: list[int] = []
            for name, optional in _REPORT_COUNTS:
                n = raw_value.get(name, 0 if optional else None)
                if not (isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**63):
                    raise ValueError(
                        f"report.targets[{raw_key!r}] needs non-negative integers in_flight, queued "
                        "(and optional started, peak)"
                    )
                counts.append(n)
            in_flight, queued, started, peak = counts
            targets[key] = TargetConcurrency(in_flight=in_flight, queued=queued, started=started, peak=peak)
        raw_cold = doc.get("cold", [])
        if not isinstance(raw_cold, list):
            raise ValueError("report.cold must be a list")
        cold = frozenset(parse_target_key(item) for item in raw_cold)
        return cls(activator=activator, targets=targets, cold=cold)


_REPORT_COUNTS = (("in_flight", False), ("queued", False), ("started", True), ("peak", True))


def parse_target_key(text: object) -> TargetKey:
    """``"namespace/name"`` -> TargetKey; ValueError otherwise."""
    if not isinstance(text, str) or text.count("/") != 1:
        raise ValueError(f"target {text!r} must be 'namespace/name'")
    namespace, name = text.split("/")
    if not namespace or not name:
        raise ValueError(f"target {text!r} must be 'namespace/name'")
    return TargetKey(namespace, name)


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """One RabbitMQ queue as read in one tick: messages ready, and delivered but not acknowledged."""

    queue: str
    vhost: str
    ready: int
    unacked: int


@dataclass(frozen=True, slots=True)
class StreamBacklog:
    """One Redis Streams consumer group as read in one tick. ``lag``: entries not yet delivered to the group
    (None: Redis cannot tell, e.g. after XDEL); ``pending``: delivered and not acknowledged; ``length``:
    XLEN of the stream, when asked for."""

    lag: int | None
    pending: int
    length: int | None = None


@dataclass(frozen=True, slots=True)
class ConsumerBacklog:
    """One NATS JetStream consumer as read in one tick: not yet delivered, delivered and not acknowledged."""

    pending: int
    ack_pending: int


@dataclass(frozen=True, slots=True)
class Observation:
    """What one tick saw for one target.

    ``partitions`` is None when the lag could not be read this tick (``kafka_error`` says why); it is ignored
    for targets without Kafka. ``concurrency`` is the activators' in-flight + queued total for the target, or
    None when there is no report: for a target with ``http-service`` that is missing data and is held like
    unreadable lag, so pass 0 when the activators report and hold nothing for the target.
    ``requests_started`` and ``peak_concurrency`` are what the activators saw since the previous decision:
    a request that came and went between two reports still counts as activity. ``ready_replicas`` (None:
    unknown) divides the work done for drain-within's processing rate per replica.
    """

    current_replicas: int
    partitions: tuple[PartitionOffsets, ...] | None
    kafka_error: str | None = None
    concurrency: int | None = None
    requests_started: int = 0
    peak_concurrency: int = 0
    ready_replicas: int | None = None
    # The other sources, each None when it could not be read (``*_error`` says why) or is not used.
    rabbitmq: tuple[QueueCounts, ...] | None = None
    rabbitmq_error: str | None = None
    redis: StreamBacklog | None = None
    redis_error: str | None = None
    nats: ConsumerBacklog | None = None
    nats_error: str | None = None


class Rule(StrEnum):
    """What set a decision's replica count; the values are the words logs, Events and ``decide`` print."""

    PAUSED_REPLICAS = "paused-replicas"
    PAUSED = "paused"
    ACTIVATE = "activate"
    SCALE_UP = "scale-up"
    SCALE_DOWN_WINDOW = "scale-down-window"
    SCALE_TO_ZERO = "scale-to-zero"
    HOLD = "hold"
    HOLD_UNREADABLE = "hold-unreadable"
    FALLBACK = "fallback"
    CLAMP_MIN = "clamp-min"
    CLAMP_MAX = "clamp-max"


class Source(StrEnum):
    """A kind of backlog a target scales on."""

    KAFKA = "kafka"
    HTTP = "http"
    RABBITMQ = "rabbitmq"
    REDIS = "redis"
    NATS = "nats"


class Cap(StrEnum):
    """What limited a Kafka source's replica count below ceil(lag / lag-per-replica), or spread it."""

    PARTITIONS = "partitions"
    PARTITIONS_WITH_LAG = "partitions with lag"
    EVEN_DISTRIBUTION = "even-partition-distribution"


@dataclass(frozen=True, slots=True)
class RateSizing:
    """drain-within's part of a Kafka reading: the rates it used and the counts they give.

    ``arrival`` (records/s) and ``per_replica`` (records/s per ready consumer) are None while unknown; then
    ``needed`` is None and the fixed lag-per-replica sizes the source. Otherwise ``needed`` =
    ceil((arrival + backlog / drain_within) / per_replica) and ``keep`` the same at 90 % of the rate (the
    count a scale-down must get below: headroom against flapping). ``rising``: the arrival rate is above
    its slow average, so scale-downs wait.
    """

    drain_within: timedelta
    arrival: float | None
    per_replica: float | None
    needed: int | None
    keep: int | None
    rising: bool


@dataclass(frozen=True, slots=True)
class SourceReading:
    """One source's part of one decision: its backlog and the replicas it asks for.

    ``error`` is None when the source was read and says why otherwise (then the other numbers are 0).
    ``backlog`` counts toward activation (Kafka: lag including persistent lag; HTTP: in-flight + queued);
    ``sizing_backlog`` toward the replica count (Kafka leaves out persistent lag). ``needed`` is
    ceil(sizing_backlog / per_replica) and ``replicas`` the count after the source's ``cap``. The source
    has work when ``backlog`` > ``activation``, or when work came and went since the previous reading
    (HTTP: ``started`` requests, ``peak`` concurrency). ``partitions`` is the Kafka partition count.
    ``rate`` is set when drain-within sizes the source (then ``needed`` comes from the rates once known).
    """

    source: Source
    error: str | None = None
    backlog: int = 0
    sizing_backlog: int = 0
    per_replica: int = 1
    needed: int = 0
    replicas: int = 0
    activation: int = 0
    cap: Cap | None = None
    partitions: int = 0
    started: int = 0
    peak: int = 0
    rate: RateSizing | None = None

    @property
    def readable(self) -> bool:
        return self.error is None

    @property
    def active(self) -> bool:
        """Work now (backlog above activation), or work that came and went since the previous reading."""
        return self.error is None and (self.backlog > self.activation or self.started > 0 or self.peak > 0)


@dataclass(frozen=True, slots=True)
class Decision:
    """The replica count a target should have, what set it, and the numbers behind it.

    ``total_lag`` is the Kafka lag including persistent lag (0 without Kafka or when unreadable). ``rule``
    says what set the count; ``proposed``/``proposed_rule`` are the count and rule before the
    min/max-replicas clamp (equal to ``desired_replicas``/``rule`` when nothing was clamped). ``idle_since``
    is the start of the current idle run (None while active): the value to persist as ``last-active``.
    ``idle_for`` is how long the target has been idle, ``window_max`` the highest count seen within
    ``scale_down_window``, ``scale_to_zero_after`` None when min-replicas > 0 (no idle timer).
    ``policy.reasons.explain`` renders all this as one English sentence.
    """

    desired_replicas: int
    total_lag: int
    active: bool
    rule: Rule
    idle_since: datetime | None
    current_replicas: int = 0
    readings: tuple[SourceReading, ...] = ()
    proposed: int = 0
    proposed_rule: Rule = Rule.HOLD
    idle_for: timedelta | None = None
    window_max: int = 0
    scale_down_window: timedelta = timedelta(0)
    scale_to_zero_after: timedelta | None = None

    @property
    def all_readable(self) -> bool:
        return all(reading.readable for reading in self.readings)

    @property
    def source(self) -> Source | None:
        """The readable source asking for the most replicas (the first of equals): the one that won."""
        readable = [r for r in self.readings if r.readable]
        return max(readable, key=lambda r: r.replicas).source if readable else None


# --- the event broker's Kafka names (Knative's Kafka broker naming) ------------------------------------


def broker_topic(namespace: str, broker: str) -> str:
    """The Kafka topic of a Broker: ``knative-broker-<namespace>-<name>``."""
    return f"knative-broker-{namespace}-{broker}"


def trigger_consumer_group(namespace: str, trigger: str) -> str:
    """The consumer group that delivers a Trigger's events: ``knative-trigger-<namespace>-<name>``."""
    return f"knative-trigger-{namespace}-{trigger}"
