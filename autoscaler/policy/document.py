"""The ``queue-autoscaler decide`` document: JSON in, one decision, JSON out (DESIGN.md).

Parses the document into the decision's inputs, runs ``decide``, renders the answer; also writes and reads
the ``state`` a caller passes back to chain decisions. Pure: the CLI does the reading and printing.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Collection, Mapping
from datetime import datetime

from autoscaler.model import Decision, Observation, PartitionOffsets, TopicPartition
from autoscaler.policy import backlog_document, reasons
from autoscaler.policy.annotations import PREFIX, format_rfc3339, parse_rfc3339
from autoscaler.policy.annotations import parse as parse_annotations
from autoscaler.policy.decide import DecisionState, decide
from autoscaler.policy.rates import Rates, Reading


class DocumentError(ValueError):
    """A ``queue-autoscaler decide`` document (or its state) is malformed; the message names the field."""


INT64_MAX = 2**63 - 1
DOCUMENT_KEYS = frozenset(
    {
        "annotations",
        "current_replicas",
        "partitions",
        "now",
        "state",
        "concurrency",
        "requests_started",
        "peak_concurrency",
        "ready_replicas",
        "kafka_error",
        "rabbitmq",
        "redis",
        "nats",
    }
)
PARTITION_KEYS = frozenset({"topic", "partition", "committed", "end", "start"})
STATE_KEYS = frozenset({"idle_since", "history", "committed", "rates"})
COMMITTED_KEYS = frozenset({"topic", "partition", "offset"})


def load(text: str | bytes) -> object:
    """The JSON of a document; DocumentError for text that is not JSON or nests too deeply to read."""
    try:
        return json.loads(text)
    except RecursionError:
        raise DocumentError("stdin is JSON nested too deeply to read") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DocumentError(f"stdin is not JSON: {exc}") from None


def _known(obj: Mapping[str, object], allowed: Collection[str], where: str) -> None:
    """Refuses keys outside ``allowed``, suggesting the closest allowed one."""
    for key in obj:
        if key in allowed:
            continue
        close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; allowed: {', '.join(sorted(allowed))}"
        raise DocumentError(f"{where}: unknown key {key!r}{hint}")


def state_to_json(state: DecisionState) -> dict[str, object]:
    fmt = format_rfc3339
    doc: dict[str, object] = {
        "idle_since": None if state.idle_since is None else fmt(state.idle_since),
        "history": [[fmt(moment), count] for moment, count in state.history],
        "committed": [
            {"topic": tp.topic, "partition": tp.partition, "offset": offset} for tp, offset in state.committed
        ],
    }
    if state.rates != Rates():  # only drain-within targets measure rates
        doc["rates"] = _rates_to_json(state.rates)
    return doc


def _rates_to_json(rates: Rates) -> dict[str, object]:
    def reading(r: Reading | None) -> dict[str, object] | None:
        if r is None:
            return None
        return {"at": format_rfc3339(r.at), "added": r.added, "done": r.done, "consumers": r.consumers}

    return {
        "last": reading(rates.last),
        "anchor": reading(rates.anchor),
        "most_consumers": rates.most_consumers,
        "least_backlog": rates.least_backlog,
        "arrival": rates.arrival,
        "arrival_slow": rates.arrival_slow,
        "per_replica": rates.per_replica,
    }


def _rates_from_json(obj: object) -> Rates:
    if obj is None:
        return Rates()
    if not isinstance(obj, Mapping):
        raise DocumentError("state.rates must be an object")

    def reading(name: str) -> Reading | None:
        raw = obj.get(name)
        if raw is None:
            return None
        where = f"state.rates.{name}"
        if not isinstance(raw, Mapping):
            raise DocumentError(f"{where} must be an object with at, added, done, consumers")
        return Reading(
            _time(raw.get("at"), f"{where}.at"),
            _count(raw.get("added"), f"{where}.added"),
            _count(raw.get("done"), f"{where}.done"),
            _count(raw.get("consumers"), f"{where}.consumers"),
        )

    def rate(name: str) -> float | None:
        raw = obj.get(name)
        if raw is None:
            return None
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 <= raw < float("inf"):
            raise DocumentError(f"state.rates.{name} must be a number >= 0 or null, got {raw!r}")
        return float(raw)

    return Rates(
        last=reading("last"),
        anchor=reading("anchor"),
        most_consumers=_count(obj.get("most_consumers", 0), "state.rates.most_consumers"),
        least_backlog=_count(obj.get("least_backlog", 0), "state.rates.least_backlog"),
        arrival=rate("arrival"),
        arrival_slow=rate("arrival_slow"),
        per_replica=rate("per_replica"),
    )


def state_from_json(obj: object) -> DecisionState:
    """Parses what ``state_to_json`` wrote; raises DocumentError naming the malformed field."""
    if not isinstance(obj, Mapping):
        raise DocumentError("state must be an object")
    _known(obj, STATE_KEYS, "state")
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
        _known(entry, COMMITTED_KEYS, where)
        tp = TopicPartition(
            _topic(entry.get("topic"), f"{where}.topic"),
            _count(entry.get("partition"), f"{where}.partition"),
        )
        committed.append((tp, _count(entry.get("offset"), f"{where}.offset")))
    return DecisionState(
        idle_since=idle_since,
        history=tuple(history),
        committed=tuple(committed),
        rates=_rates_from_json(obj.get("rates")),
    )


def decide_document(doc: object, now: datetime) -> dict[str, object]:
    """Runs ``decide`` on a ``queue-autoscaler decide`` document (see DESIGN.md) and returns the answer.

    ``now`` is used when the document has no ``now``. Annotation keys may omit the ``queue-autoscaler.dev/``
    prefix. Besides the documented fields, ``concurrency`` (activator in-flight + queued, for HTTP targets)
    with ``requests_started`` and ``peak_concurrency`` (what the activators saw since the previous decision),
    ``ready_replicas`` (drain-within's divisor; absent: not known) and ``kafka_error`` are accepted. A Kafka
    target needs ``partitions``: null means the lag could not be read. Unknown keys and integers beyond
    int64 are refused. ``rabbitmq``, ``redis`` and ``nats`` absent or null mean that source could not be
    read. The answer's ``source`` names the source that won.
    Raises DocumentError (a ValueError) for a malformed document, PolicyError for invalid annotations.
    """
    if not isinstance(doc, Mapping):
        raise DocumentError("the document must be a JSON object")
    _known(doc, DOCUMENT_KEYS, "document")
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
    started = _count(doc.get("requests_started", 0), "requests_started")
    peak = _count(doc.get("peak_concurrency", 0), "peak_concurrency")
    ready = None if doc.get("ready_replicas") is None else _count(doc["ready_replicas"], "ready_replicas")
    kafka_error = doc.get("kafka_error")
    if kafka_error is not None and not isinstance(kafka_error, str):
        raise DocumentError("kafka_error must be a string")
    if partitions is None and kafka_error is None:
        kafka_error = "partitions is null in the document"
    if doc.get("now") is not None:
        now = _time(doc["now"], "now")
    raw_state = doc.get("state")
    state = None if raw_state is None else state_from_json(raw_state)

    policy = parse_annotations(found)
    if policy is None:
        raise DocumentError(
            f"annotations name no source ({PREFIX}kafka-group, trigger, http-service, rabbitmq-queues, "
            "rabbitmq-queue-pattern, redis-stream or nats-stream): not a queue-autoscaler target"
        )
    if policy.uses_kafka and "partitions" not in doc:
        raise DocumentError(
            "partitions: required for a Kafka target, a list of partition offsets, or null when the lag "
            "could not be read"
        )
    if state is None:
        state = DecisionState.initial(policy.last_active)
    observation = Observation(
        current,
        partitions,
        kafka_error=kafka_error,
        concurrency=concurrency,
        requests_started=started,
        peak_concurrency=peak,
        ready_replicas=ready,
        **backlog_document.observed(doc, DocumentError),
    )
    decision, new_state = decide(policy, observation, state, now)
    answer: dict[str, object] = {
        "desired_replicas": decision.desired_replicas,
        "total_lag": decision.total_lag,
        "active": decision.active,
        "reason": reasons.explain(decision),
        "rule": str(decision.rule),
        "source": None if decision.source is None else str(decision.source),
        "state": state_to_json(new_state),
    }
    used = _rates_used(decision)
    if used is not None:
        answer["rates"] = used
    return answer


def _rates_used(decision: Decision) -> dict[str, object] | None:
    """drain-within's numbers, when it sized a source: rates in records/s, null while not measured."""
    for reading in decision.readings:
        rate = reading.rate
        if rate is not None:
            return {
                "drain_within_s": rate.drain_within.total_seconds(),
                "arrival_per_s": None if rate.arrival is None else round(rate.arrival, 3),
                "per_replica_per_s": None if rate.per_replica is None else round(rate.per_replica, 3),
                "replicas": rate.needed,
                "keep": rate.keep,
                "rising": rate.rising,
            }
    return None


def _partitions(value: object) -> tuple[PartitionOffsets, ...]:
    entries = _list(value, "partitions")
    result = []
    seen: set[TopicPartition] = set()
    for i, entry in enumerate(entries):
        where = f"partitions[{i}]"
        if not isinstance(entry, Mapping):
            raise DocumentError(f"{where} must be an object with topic, partition, committed, end")
        _known(entry, PARTITION_KEYS, where)
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
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= INT64_MAX:
        raise DocumentError(
            f"{where} must be an integer >= 0 and <= {INT64_MAX} (int64), got {_short(value)}"
        )
    return value


def _optional_count(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= INT64_MAX:
        raise DocumentError(
            f"{where} must be an integer >= 0 or null, at most {INT64_MAX} (int64), got {_short(value)}"
        )
    return value


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


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
