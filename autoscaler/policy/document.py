"""The ``queue-autoscaler decide`` document: JSON in, one decision, JSON out (DESIGN.md).

Parses the document into the decision's inputs, runs ``decide``, renders the answer; also writes and reads
the ``state`` a caller passes back to chain decisions. Pure: the CLI does the reading and printing.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from autoscaler.model import Observation, PartitionOffsets, TopicPartition
from autoscaler.policy import backlog_document, reasons
from autoscaler.policy.annotations import PREFIX, format_rfc3339, parse_rfc3339
from autoscaler.policy.annotations import parse as parse_annotations
from autoscaler.policy.decide import DecisionState, decide


class DocumentError(ValueError):
    """A ``queue-autoscaler decide`` document (or its state) is malformed; the message names the field."""


def state_to_json(state: DecisionState) -> dict[str, object]:
    fmt = format_rfc3339
    return {
        "idle_since": None if state.idle_since is None else fmt(state.idle_since),
        "history": [[fmt(moment), count] for moment, count in state.history],
        "committed": [
            {"topic": tp.topic, "partition": tp.partition, "offset": offset} for tp, offset in state.committed
        ],
    }


def state_from_json(obj: object) -> DecisionState:
    """Parses what ``state_to_json`` wrote; raises DocumentError naming the malformed field."""
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
    return DecisionState(idle_since=idle_since, history=tuple(history), committed=tuple(committed))


def decide_document(doc: Mapping[str, object], now: datetime) -> dict[str, object]:
    """Runs ``decide`` on a ``queue-autoscaler decide`` document (see DESIGN.md) and returns the answer.

    ``now`` is used when the document has no ``now``. Annotation keys may omit the ``queue-autoscaler.dev/``
    prefix. Besides the documented fields, ``concurrency`` (activator in-flight + queued, for HTTP targets)
    and ``kafka_error`` are accepted; ``partitions`` absent or null means the lag could not be read, and so
    for ``rabbitmq``, ``redis`` and ``nats``. The answer's ``source`` names the source that won.
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
    state = None if raw_state is None else state_from_json(raw_state)

    policy = parse_annotations(found)
    if policy is None:
        raise DocumentError(
            f"annotations name no source ({PREFIX}kafka-group, http-service, rabbitmq-queues, "
            "rabbitmq-queue-pattern, redis-stream or nats-stream): not a queue-autoscaler target"
        )
    if state is None:
        state = DecisionState.initial(policy.last_active)
    observation = Observation(
        current,
        partitions,
        kafka_error=kafka_error,
        concurrency=concurrency,
        **backlog_document.observed(doc, DocumentError),
    )
    decision, new_state = decide(policy, observation, state, now)
    return {
        "desired_replicas": decision.desired_replicas,
        "total_lag": decision.total_lag,
        "active": decision.active,
        "reason": reasons.explain(decision),
        "rule": str(decision.rule),
        "source": None if decision.source is None else str(decision.source),
        "state": state_to_json(new_state),
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
