"""(policy, observation, state, now) -> (Decision, new state): the whole scaling decision, pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from autoscaler.model import Decision, Observation, PartitionOffsets, TopicPartition
from autoscaler.policy import lag
from autoscaler.policy.annotations import PREFIX, ScalingPolicy, format_rfc3339, parse_rfc3339
from autoscaler.policy.annotations import parse as parse_annotations


class DocumentError(ValueError):
    """A ``queue-autoscaler decide`` document (or its state) is malformed; the message names the field."""


@dataclass(frozen=True, slots=True)
class DecisionState:
    """What a target's next decision needs from the previous ones.

    ``idle_since``: when the activation lag first became <= activation-lag in the current idle run (None
    while active). ``history``: (time, raw desired count) within the scale-down window, oldest first.
    ``committed``: committed offsets of the previous read, kept only with exclude-persistent-lag.
    An empty history means nothing was seen yet: the next decision counts the current replicas as seen.
    """

    idle_since: datetime | None
    history: tuple[tuple[datetime, int], ...]
    committed: tuple[tuple[TopicPartition, int], ...]

    @classmethod
    def initial(cls, last_active: datetime | None) -> DecisionState:
        """The state of a target first seen, seeded from its ``last-active`` annotation."""
        return cls(idle_since=last_active, history=(), committed=())

    def to_json(self) -> dict[str, object]:
        fmt = format_rfc3339
        return {
            "idle_since": None if self.idle_since is None else fmt(self.idle_since),
            "history": [[fmt(moment), count] for moment, count in self.history],
            "committed": [
                {"topic": tp.topic, "partition": tp.partition, "offset": offset}
                for tp, offset in self.committed
            ],
        }

    @classmethod
    def from_json(cls, obj: object) -> DecisionState:
        """Parses what ``to_json`` wrote; raises DocumentError naming the malformed field."""
        if not isinstance(obj, Mapping):
            raise DocumentError("state must be an object")
        raw_idle = obj.get("idle_since")
        idle_since = None if raw_idle is None else _time(raw_idle, "state.idle_since")
        history = []
        for i, entry in enumerate(_list(obj.get("history", []), "state.history")):
            if not (isinstance(entry, list) and len(entry) == 2):
                raise DocumentError(f"state.history[{i}] must be a [time, replicas] pair")
            history.append(
                (_time(entry[0], f"state.history[{i}][0]"), _count(entry[1], f"state.history[{i}][1]"))
            )
        committed = []
        for i, entry in enumerate(_list(obj.get("committed", []), "state.committed")):
            where = f"state.committed[{i}]"
            if not isinstance(entry, Mapping):
                raise DocumentError(f"{where} must be an object with topic, partition, offset")
            tp = TopicPartition(
                _topic(entry.get("topic"), f"{where}.topic"),
                _count(entry.get("partition"), f"{where}.partition"),
            )
            committed.append((tp, _count(entry.get("offset"), f"{where}.offset")))
        return cls(idle_since=idle_since, history=tuple(history), committed=tuple(committed))


@dataclass(frozen=True, slots=True)
class _Signal:
    """One source's reading this tick: the replicas it asks for and whether it has work."""

    readable: bool
    raw: int
    active: bool
    sizing: str
    activity: str


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
    signals: list[_Signal] = []
    committed = state.committed
    total_lag = 0
    if policy.uses_kafka:
        if observation.partitions is None:
            why = observation.kafka_error or "no offsets were read"
            signals.append(_Signal(False, 0, False, f"lag unreadable ({why})", ""))
        else:
            result = lag.compute(policy, observation.partitions, dict(state.committed))
            total_lag = result.activation_lag
            signals.append(_kafka_signal(policy, result))
            if policy.exclude_persistent_lag:
                committed = tuple(
                    sorted(
                        (p.topic_partition, p.committed) for p in result.partitions if p.committed is not None
                    )
                )
    if policy.uses_http:
        if observation.concurrency is None:
            signals.append(_Signal(False, 0, False, "no concurrency report", ""))
        else:
            signals.append(_http_signal(policy, observation.concurrency))

    readable = [s for s in signals if s.readable]
    all_readable = len(readable) == len(signals)
    active = any(s.active for s in readable)
    raw = max((s.raw for s in readable), default=0)

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
        history += ((now, raw),)
    new_state = DecisionState(idle_since=idle_since, history=history, committed=committed)

    situation = "; ".join(s.sizing for s in signals) or "no scaling source"
    activity = " and ".join(s.activity for s in readable)
    if policy.paused_replicas is not None:
        desired, rule = policy.paused_replicas, "paused-replicas"
        action = f"paused-replicas is {desired}, so the count is {desired} whatever the load"
    elif policy.paused:
        desired, rule = current, "paused"
        action = f"paused, so the count stays at {current}"
    elif not all_readable:
        desired, rule, action = _hold_on_missing_data(policy, current, raw, active, activity)
    else:
        desired, rule, action = _scale(policy, current, raw, active, activity, idle_since, history, now)
    if rule not in ("paused", "paused-replicas"):
        if desired < policy.min_replicas:
            desired, rule = policy.min_replicas, "clamp-min"
            action += f", raised to min-replicas {desired}"
        elif desired > policy.max_replicas:
            desired, rule = policy.max_replicas, "clamp-max"
            action += f", limited to max-replicas {desired}"
    decision = Decision(
        desired_replicas=desired,
        total_lag=total_lag,
        active=active,
        reason=f"{situation}; {action}.",
        rule=rule,
        idle_since=idle_since,
    )
    return decision, new_state


def _kafka_signal(policy: ScalingPolicy, result: lag.LagResult) -> _Signal:
    sizing_lag, per_replica, count = result.sizing_lag, policy.lag_per_replica, result.partition_count
    needed = _ceil_div(sizing_lag, per_replica)
    text = f"lag {result.activation_lag} across {_plural(count, 'partition')}"
    if result.persistent_lag:
        text += f" ({result.persistent_lag} of it persistent, not counted for sizing)"
    text += f" at lag-per-replica {per_replica} needs {_plural(needed, 'replica')}"
    if policy.even_partition_distribution:
        raw = 0 if sizing_lag == 0 else _smallest_covering_divisor(count, per_replica, sizing_lag)
        if raw != needed:
            text += f", {raw} to spread {_plural(count, 'partition')} evenly"
    else:
        if policy.limit_to_partitions_with_lag:
            cap, what = result.partitions_with_lag, "partitions with lag"
        elif not policy.allow_idle_consumers:
            cap, what = count, "partitions"
        else:
            cap, what = needed, ""
        raw = min(needed, cap)
        if raw < needed:
            text += f", capped at {raw} ({what})"
    active = result.activation_lag > policy.activation_lag
    sign = ">" if active else "<="
    activity = f"activation lag {result.activation_lag} {sign} activation-lag {policy.activation_lag}"
    return _Signal(True, raw, active, text, activity)


def _smallest_covering_divisor(partitions: int, per_replica: int, sizing_lag: int) -> int:
    """The smallest f dividing the partition count with f × lag-per-replica >= lag; the count if none."""
    for factor in range(1, partitions + 1):
        if partitions % factor == 0 and factor * per_replica >= sizing_lag:
            return factor
    return partitions


def _http_signal(policy: ScalingPolicy, concurrency: int) -> _Signal:
    per_replica = policy.concurrency_per_replica
    raw = _ceil_div(concurrency, per_replica)
    text = (
        f"concurrency {concurrency} at concurrency-per-replica {per_replica} needs {_plural(raw, 'replica')}"
    )
    active = concurrency > 0
    activity = f"concurrency {concurrency} {'>' if active else '='} 0"
    return _Signal(True, raw, active, text, activity)


def _hold_on_missing_data(
    policy: ScalingPolicy, current: int, raw: int, active: bool, activity: str
) -> tuple[int, str, str]:
    """Some source could not be read: keep current (or raise to fallback-replicas); readable sources may
    still scale up, never down."""
    fallback = policy.fallback_replicas
    if fallback is not None and fallback > current:
        desired, rule = fallback, "fallback"
        action = f"raising {current} to fallback-replicas {fallback} until it can be read"
    else:
        desired, rule = current, "hold-unreadable"
        action = f"holding {current}: never scaling down on missing data"
    wanted = (max(raw, 1) if active else 0) if current == 0 else raw
    if wanted > desired:
        rule = "activate" if current == 0 else "scale-up"
        action = f"{activity}: scaling up from {current} to {wanted} on the sources that could be read"
        desired = wanted
    return desired, rule, action


def _scale(
    policy: ScalingPolicy,
    current: int,
    raw: int,
    active: bool,
    activity: str,
    idle_since: datetime | None,
    history: tuple[tuple[datetime, int], ...],
    now: datetime,
) -> tuple[int, str, str]:
    if current == 0:
        if active:
            desired = max(raw, 1)
            return desired, "activate", f"{activity}: scaling from 0 to {desired}"
        return 0, "hold", f"{activity}: staying at 0"
    idle_for = None if idle_since is None else now - idle_since
    to_zero = policy.scale_to_zero_after
    if idle_for is not None and idle_for >= to_zero and policy.min_replicas == 0:
        return (
            0,
            "scale-to-zero",
            (
                f"{activity} for {_duration(idle_for)} (scale-to-zero-after {_duration(to_zero)}): "
                f"scaling from {current} to 0"
            ),
        )
    # While replicas run, a raw count of 0 counts as 1: only the idle timer takes a target to zero.
    wanted = max(raw, 1)
    if wanted > current:
        return wanted, "scale-up", f"scaling up from {current} to {wanted}"
    window = policy.scale_down_window
    window_max = max(max((n for _, n in history), default=0), 1)
    idle_note = ""
    if idle_for is not None and policy.min_replicas == 0:
        idle_note = f", idle for {_duration(idle_for)} of scale-to-zero-after {_duration(to_zero)}"
    if window_max < current:
        return (
            window_max,
            "scale-down-window",
            (
                f"scaling down from {current} to {window_max}, the highest count within scale-down-window "
                f"{_duration(window)}{idle_note}"
            ),
        )
    return (
        current,
        "hold",
        (
            f"keeping {current} (highest count within scale-down-window {_duration(window)} is {window_max})"
            f"{idle_note}"
        ),
    )


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _duration(value: timedelta) -> str:
    """5m, 1m30s, 500ms, 4m59.5s: the annotation syntax where it fits."""
    ms = max(0, round(value / timedelta(milliseconds=1)))
    if ms < 1000:
        return f"{ms}ms" if ms else "0s"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    return text + (f"{rest / 1000:g}s" if rest else "")


def decide_document(doc: Mapping[str, object], now: datetime) -> dict[str, object]:
    """Runs ``decide`` on a ``queue-autoscaler decide`` document (see DESIGN.md) and returns the answer.

    ``now`` is used when the document has no ``now``. Annotation keys may omit the ``queue-autoscaler.dev/``
    prefix. Besides the documented fields, ``concurrency`` (activator in-flight + queued, for HTTP targets)
    and ``kafka_error`` are accepted; ``partitions`` absent or null means the lag could not be read.
    Raises DocumentError (a ValueError) for a malformed document, PolicyError for invalid annotations.
    """
    if not isinstance(doc, Mapping):
        raise DocumentError("the document must be a JSON object")
    raw_annotations = doc.get("annotations")
    if not isinstance(raw_annotations, Mapping):
        raise DocumentError("annotations: required, an object of annotation keys to string values")
    found: dict[str, str] = {}
    for key, value in raw_annotations.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise DocumentError(f"annotations[{key!r}] must be a string, got {value!r}")
        found[key if "/" in key else PREFIX + key] = value
    if "current_replicas" not in doc:
        raise DocumentError("current_replicas: required, an integer >= 0")
    current = _count(doc["current_replicas"], "current_replicas")
    partitions = None if doc.get("partitions") is None else _partitions(doc["partitions"])
    concurrency = None if doc.get("concurrency") is None else _count(doc["concurrency"], "concurrency")
    kafka_error = doc.get("kafka_error")
    if kafka_error is not None and not isinstance(kafka_error, str):
        raise DocumentError("kafka_error must be a string")
    if partitions is None and kafka_error is None:
        kafka_error = "no partitions in the document"
    if doc.get("now") is not None:
        now = _time(doc["now"], "now")
    raw_state = doc.get("state")
    state = None if raw_state is None else DecisionState.from_json(raw_state)

    policy = parse_annotations(found)
    if policy is None:
        raise DocumentError(
            f"annotations name neither {PREFIX}kafka-group nor {PREFIX}http-service: "
            "not a queue-autoscaler target"
        )
    if state is None:
        state = DecisionState.initial(policy.last_active)
    observation = Observation(current, partitions, kafka_error=kafka_error, concurrency=concurrency)
    decision, new_state = decide(policy, observation, state, now)
    return {
        "desired_replicas": decision.desired_replicas,
        "total_lag": decision.total_lag,
        "active": decision.active,
        "reason": decision.reason,
        "rule": decision.rule,
        "state": new_state.to_json(),
    }


def _partitions(value: object) -> tuple[PartitionOffsets, ...]:
    entries = _list(value, "partitions")
    result = []
    seen: set[TopicPartition] = set()
    for i, entry in enumerate(entries):
        where = f"partitions[{i}]"
        if not isinstance(entry, Mapping):
            raise DocumentError(f"{where} must be an object with topic, partition, committed, end")
        for required in ("topic", "partition", "committed", "end"):
            if required not in entry:
                raise DocumentError(f"{where}.{required} is required (committed and end may be null)")
        offsets = PartitionOffsets(
            topic=_topic(entry["topic"], f"{where}.topic"),
            partition=_count(entry["partition"], f"{where}.partition"),
            committed=_optional_count(entry["committed"], f"{where}.committed"),
            end=_optional_count(entry["end"], f"{where}.end"),
            start=_optional_count(entry.get("start"), f"{where}.start"),
        )
        if offsets.topic_partition in seen:
            raise DocumentError(f"{where}: {offsets.topic}/{offsets.partition} appears twice")
        seen.add(offsets.topic_partition)
        result.append(offsets)
    return tuple(result)


def _list(value: object, where: str) -> list[object]:
    if not isinstance(value, list):
        raise DocumentError(f"{where} must be a list")
    return value


def _count(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DocumentError(f"{where} must be an integer >= 0, got {value!r}")
    return value


def _optional_count(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DocumentError(f"{where} must be an integer >= 0 or null, got {value!r}")
    return value


def _topic(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise DocumentError(f"{where} must be a non-empty string, got {value!r}")
    return value


def _time(value: object, where: str) -> datetime:
    if not isinstance(value, str):
        raise DocumentError(f"{where} must be an RFC 3339 time string, got {value!r}")
    try:
        return parse_rfc3339(value)
    except ValueError as error:
        raise DocumentError(f"{where}: {error}") from None
