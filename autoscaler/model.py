"""Value types shared by every layer. Frozen, hashable, free of I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


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
    """Requests an activator holds for one target: forwarded and not yet answered, and still queued."""

    in_flight: int
    queued: int

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
                str(key): {"in_flight": c.in_flight, "queued": c.queued} for key, c in self.targets.items()
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
            in_flight, queued = raw_value.get("in_flight"), raw_value.get("queued")
            if not (
                isinstance(in_flight, int) and isinstance(queued, int) and in_flight >= 0 and queued >= 0
            ):
                raise ValueError(f"report.targets[{raw_key!r}] needs non-negative integers in_flight, queued")
            targets[key] = TargetConcurrency(in_flight=in_flight, queued=queued)
        raw_cold = doc.get("cold", [])
        if not isinstance(raw_cold, list):
            raise ValueError("report.cold must be a list")
        cold = frozenset(parse_target_key(item) for item in raw_cold)
        return cls(activator=activator, targets=targets, cold=cold)


def parse_target_key(text: object) -> TargetKey:
    """``"namespace/name"`` -> TargetKey; ValueError otherwise."""
    if not isinstance(text, str) or text.count("/") != 1:
        raise ValueError(f"target {text!r} must be 'namespace/name'")
    namespace, name = text.split("/")
    if not namespace or not name:
        raise ValueError(f"target {text!r} must be 'namespace/name'")
    return TargetKey(namespace, name)


@dataclass(frozen=True, slots=True)
class Observation:
    """What one tick saw for one target.

    ``partitions`` is None when the lag could not be read this tick (``kafka_error`` says why); it is ignored
    for targets without Kafka. ``concurrency`` is the activators' in-flight + queued total for the target, or
    None when there is no report: for a target with ``http-service`` that is missing data and is held like
    unreadable lag, so pass 0 when the activators report and hold nothing for the target.
    """

    current_replicas: int
    partitions: tuple[PartitionOffsets, ...] | None
    kafka_error: str | None = None
    concurrency: int | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """The replica count a target should have, and why.

    ``total_lag`` is the Kafka lag including persistent lag (0 without Kafka or when unreadable). ``rule``
    is a stable identifier of what set the count: ``paused-replicas``, ``paused``, ``activate``,
    ``scale-up``, ``scale-down-window``, ``scale-to-zero``, ``hold``, ``hold-unreadable``, ``fallback``,
    ``clamp-min`` or ``clamp-max``. ``reason`` is one sentence with the numbers behind it. ``idle_since``
    is the start of the current idle run (None while active): the value to persist as ``last-active``.
    """

    desired_replicas: int
    total_lag: int
    active: bool
    reason: str
    rule: str
    idle_since: datetime | None


# --- the event broker's Kafka names (Knative's Kafka broker naming) ------------------------------------


def broker_topic(namespace: str, broker: str) -> str:
    """The Kafka topic of a Broker: ``knative-broker-<namespace>-<name>``."""
    return f"knative-broker-{namespace}-{broker}"


def trigger_consumer_group(namespace: str, trigger: str) -> str:
    """The consumer group that delivers a Trigger's events: ``knative-trigger-<namespace>-<name>``."""
    return f"knative-trigger-{namespace}-{trigger}"
