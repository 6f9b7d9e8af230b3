"""Deployment annotations -> ScalingPolicy, or one PolicyError listing every bad key at once."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from autoscaler.errors import AnnotationProblem, PolicyError
from autoscaler.model import PREFIX as PREFIX
from autoscaler.policy import backlog_keys, trigger
from autoscaler.policy.backlog_keys import SourcePolicies

LAST_ACTIVE = "last-active"

_MAX_REPLICAS = 2**31 - 1  # Kubernetes replica counts are int32
_MAX_LAG = 2**63 - 1  # Kafka offsets are int64
_MAX_PARTITION = 99_999
_MAX_DURATION = timedelta(hours=8760)


class OffsetResetPolicy(StrEnum):
    LATEST = "latest"
    EARLIEST = "earliest"


@dataclass(frozen=True, slots=True)
class ScalingPolicy:
    """Every key of the annotation contract, typed. Durations are timedeltas.

    None means "unset" where the contract has no default: ``kafka_topics`` empty is all topics the group has
    offsets for, ``kafka_partitions`` None is all partitions, ``http_host`` None is
    ``<deployment>.<namespace>`` only, ``http_port`` None is the Service's only port (a number is a port the
    pods listen on, a name is a Service port name), ``cloudevents_types`` None is any type, ``drain_within``
    None is fixed thresholds only (no rate-aware sizing). ``last_active`` is written by the controller and
    is left out of equality and hashing, so two policies compare equal when the user-set keys do.
    """

    kafka_group: str | None
    kafka_topics: tuple[str, ...]
    kafka_bootstrap: tuple[str, ...] | None
    kafka_partitions: frozenset[int] | None
    lag_per_replica: int
    activation_lag: int
    min_replicas: int
    max_replicas: int
    scale_to_zero_after: timedelta
    scale_down_window: timedelta
    offset_reset_policy: OffsetResetPolicy
    allow_idle_consumers: bool
    limit_to_partitions_with_lag: bool
    even_partition_distribution: bool
    exclude_persistent_lag: bool
    scale_to_zero_on_invalid_offset: bool
    fallback_replicas: int | None
    paused_replicas: int | None
    paused: bool
    http_service: str | None
    http_port: int | str | None
    http_host: str | None
    concurrency_per_replica: int
    max_pending: int
    activation_timeout: timedelta
    cloudevents: bool
    cloudevents_types: frozenset[str] | None
    drain_within: timedelta | None = None
    last_active: datetime | None = field(compare=False, default=None)
    kafka_connection: str = "default"
    trigger: str | None = None  # a Trigger's consumer group on its Broker's topic, instead of kafka-group
    sources: SourcePolicies = field(default_factory=SourcePolicies)  # RabbitMQ, Redis Streams, NATS

    @property
    def uses_kafka(self) -> bool:
        return self.kafka_group is not None or self.trigger is not None

    @property
    def uses_http(self) -> bool:
        return self.http_service is not None


class _Invalid(Exception):
    """Raised by a value parser; carries the description of what is allowed."""

    def __init__(self, allowed: str) -> None:
        super().__init__(allowed)
        self.allowed = allowed


_Parser = Callable[[str], object]


@dataclass(frozen=True, slots=True)
class _Key:
    parse: _Parser
    default: object


def _integer(low: int, high: int) -> _Parser:
    allowed = "an integer > 0" if low == 1 else f"an integer >= {low}"

    def parse(text: str) -> int:
        if not re.fullmatch(r"[0-9]+", text):
            raise _Invalid(allowed)
        # Checked before int(): Python refuses to convert very long digit strings.
        if len(text) > 30 or int(text) > high:
            raise _Invalid(f"an integer from {low} to {high}")
        value = int(text)
        if value < low:
            raise _Invalid(allowed)
        return value

    return parse


def _boolean(text: str) -> bool:
    if text == "true":
        return True
    if text == "false":
        return False
    raise _Invalid("true or false")


_DURATION_PART = re.compile(r"([0-9]+)(ms|h|m|s)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


def _duration(*, positive: bool) -> _Parser:
    allowed = "a duration such as 500ms, 30s, 5m or 1h" + (", greater than 0" if positive else "")

    def parse(text: str) -> timedelta:
        if not re.fullmatch(r"(?:[0-9]+(?:ms|h|m|s))+", text):
            raise _Invalid(allowed)
        too_long = _Invalid(f"a duration of at most {_format_hours(_MAX_DURATION)}")
        total_ms = 0
        for number, unit in _DURATION_PART.findall(text):
            if len(number) > 15:
                raise too_long
            total_ms += int(number) * _UNIT_MS[unit]
        if total_ms > _MAX_DURATION // timedelta(milliseconds=1):
            raise too_long
        value = timedelta(milliseconds=total_ms)
        if positive and value <= timedelta(0):
            raise _Invalid(allowed)
        return value

    return parse


def _format_hours(value: timedelta) -> str:
    return f"{int(value.total_seconds()) // 3600}h"


def _one_of(kind: type[OffsetResetPolicy]) -> _Parser:
    names = [member.value for member in kind]
    allowed = " or ".join(names)

    def parse(text: str) -> OffsetResetPolicy:
        if text not in names:
            raise _Invalid(allowed)
        return kind(text)

    return parse


def _non_empty(allowed: str) -> _Parser:
    def parse(text: str) -> str:
        if not text or not text.isprintable():
            raise _Invalid(allowed)
        return text

    return parse


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.split(",")]


_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


def _topics(text: str) -> tuple[str, ...]:
    items = _items(text)
    if not all(_TOPIC.fullmatch(item) for item in items):
        raise _Invalid("a comma list of Kafka topic names (letters, digits, '.', '_', '-')")
    return tuple(dict.fromkeys(items))


def _partitions(text: str) -> frozenset[int]:
    allowed = f"a comma list of partitions and ranges such as 0-3,8 (partitions 0 to {_MAX_PARTITION})"
    found: set[int] = set()
    for item in _items(text):
        match = re.fullmatch(r"([0-9]{1,5})(?:-([0-9]{1,5}))?", item)
        if match is None:
            raise _Invalid(allowed)
        low = int(match.group(1))
        high = low if match.group(2) is None else int(match.group(2))
        if low > high or high > _MAX_PARTITION:
            raise _Invalid(allowed)
        found.update(range(low, high + 1))
    return frozenset(found)


_BOOTSTRAP = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):([0-9]{1,5})")


def _bootstrap(text: str) -> tuple[str, ...]:
    allowed = "a comma list of host:port Kafka brokers"
    items = _items(text)
    for item in items:
        match = _BOOTSTRAP.fullmatch(item)
        if match is None or not 1 <= int(match.group(1)) <= 65535:
            raise _Invalid(allowed)
    return tuple(dict.fromkeys(items))


def _connection_name(text: str) -> str:
    if not re.fullmatch(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?", text):
        raise _Invalid("a connection name from the connections file: lowercase letters, digits and '-'")
    return text


_DNS_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")


def _service_name(text: str) -> str:
    if not re.fullmatch(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?", text):
        raise _Invalid(
            "a Service name: lowercase letters, digits and '-', starting with a letter, at most 63"
        )
    return text


_PORT_NAME = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,13}[a-z0-9])?")


def _port(text: str) -> int | str:
    """A port number, or a Service port name (IANA_SVC_NAME: at most 15 of a-z, 0-9 and '-', a letter)."""
    if re.fullmatch(r"[0-9]+", text):
        if len(text) > 5 or not 1 <= int(text) <= 65535:
            raise _Invalid("a port number from 1 to 65535 (or a Service port name)")
        return int(text)
    if not _PORT_NAME.fullmatch(text) or "--" in text or not any(c.isalpha() for c in text):
        raise _Invalid(
            "a port number from 1 to 65535 or a Service port name (at most 15 lowercase letters, digits "
            "and '-', with a letter, no '--')"
        )
    return text


def _host(text: str) -> str:
    host = text.lower()
    if len(host) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in host.split(".")):
        raise _Invalid("a DNS host name such as worker.example.com")
    return host


def _trigger_name(text: str) -> str:
    if not trigger.valid_name(text):
        raise _Invalid(trigger.ALLOWED)
    return text


def _event_types(text: str) -> frozenset[str]:
    items = _items(text)
    if not all(item and item.isprintable() for item in items):
        raise _Invalid("a comma list of non-empty CloudEvents type values")
    return frozenset(items)


# The annotation contract: key (without PREFIX) -> how its value parses, and its value when absent.
# The ScalingPolicy attribute is the key with '-' replaced by '_'.
_KEYS: dict[str, _Key] = {
    "kafka-group": _Key(_non_empty("a non-empty consumer group name"), None),
    "kafka-topics": _Key(_topics, ()),
    "kafka-bootstrap": _Key(_bootstrap, None),
    "kafka-partitions": _Key(_partitions, None),
    "kafka-connection": _Key(_connection_name, "default"),
    "trigger": _Key(_trigger_name, None),
    "lag-per-replica": _Key(_integer(1, _MAX_LAG), 10),
    "activation-lag": _Key(_integer(0, _MAX_LAG), 0),
    "min-replicas": _Key(_integer(0, _MAX_REPLICAS), 0),
    "max-replicas": _Key(_integer(0, _MAX_REPLICAS), 100),
    "scale-to-zero-after": _Key(_duration(positive=False), timedelta(minutes=5)),
    "scale-down-window": _Key(_duration(positive=False), timedelta(minutes=1)),
    "offset-reset-policy": _Key(_one_of(OffsetResetPolicy), OffsetResetPolicy.LATEST),
    "allow-idle-consumers": _Key(_boolean, False),
    "limit-to-partitions-with-lag": _Key(_boolean, False),
    "even-partition-distribution": _Key(_boolean, False),
    "exclude-persistent-lag": _Key(_boolean, False),
    "scale-to-zero-on-invalid-offset": _Key(_boolean, False),
    "fallback-replicas": _Key(_integer(0, _MAX_REPLICAS), None),
    "paused-replicas": _Key(_integer(0, _MAX_REPLICAS), None),
    "paused": _Key(_boolean, False),
    "http-service": _Key(_service_name, None),
    "http-port": _Key(_port, None),
    "http-host": _Key(_host, None),
    "concurrency-per-replica": _Key(_integer(1, _MAX_LAG), 10),
    "max-pending": _Key(_integer(1, _MAX_REPLICAS), 1000),
    "activation-timeout": _Key(_duration(positive=True), timedelta(seconds=60)),
    "cloudevents": _Key(_boolean, False),
    "cloudevents-types": _Key(_event_types, None),
    "drain-within": _Key(_duration(positive=True), None),
}

KNOWN_KEYS: frozenset[str] = frozenset(_KEYS) | backlog_keys.KEYS | {LAST_ACTIVE}
_ENABLING_KEYS = ("kafka-group", trigger.KEY, "http-service", *backlog_keys.ENABLING_KEYS)


def parse(annotations: Mapping[str, str]) -> ScalingPolicy | None:
    """The policy of a Deployment, or None when it names no source (kafka-group, trigger, http-service,
    rabbitmq-queues / rabbitmq-queue-pattern, redis-stream, nats-stream).

    Raises PolicyError listing every bad key (in contract order, then unknown keys, then conflicts). A
    malformed last-active is ignored: the controller rewrites it.
    """
    if not any(PREFIX + key in annotations for key in _ENABLING_KEYS):
        return None
    problems: list[AnnotationProblem] = []
    values: dict[str, Any] = {}
    for key, spec in _KEYS.items():
        raw = annotations.get(PREFIX + key)
        if raw is None:
            values[key] = spec.default
            continue
        try:
            values[key] = spec.parse(raw.strip())
        except _Invalid as invalid:
            problems.append(AnnotationProblem(key, raw, invalid.allowed))
    sources, source_problems = backlog_keys.parse_sources(annotations)
    problems.extend(source_problems)
    problems.extend(_unknown_keys(annotations))
    bad = {problem.key for problem in problems}
    problems.extend(_conflicts(values, annotations, bad))
    problems.extend(trigger.conflicts(annotations))
    if problems:
        raise PolicyError(tuple(problems))
    if values[trigger.KEY] is not None and PREFIX + "scale-to-zero-on-invalid-offset" not in annotations:
        # The dispatcher starts a Trigger's group at the latest offset: a partition without a committed
        # offset holds nothing it will deliver (a Trigger just created, its dispatcher not joined yet).
        values["scale-to-zero-on-invalid-offset"] = True
    return ScalingPolicy(
        **{key.replace("-", "_"): value for key, value in values.items()},
        last_active=_last_active(annotations.get(PREFIX + LAST_ACTIVE)),
        sources=sources,
    )


def _unknown_keys(annotations: Mapping[str, str]) -> list[AnnotationProblem]:
    problems = []
    for full_key in sorted(annotations):
        if not full_key.startswith(PREFIX):
            continue
        key = full_key.removeprefix(PREFIX)
        if key in KNOWN_KEYS:
            continue
        close = difflib.get_close_matches(key, sorted(KNOWN_KEYS), n=1) if len(key) <= 100 else []
        hint = f"did you mean {close[0]}?" if close else "known keys: " + ", ".join(sorted(KNOWN_KEYS))
        problems.append(
            AnnotationProblem(key, annotations[full_key], f"not a {PREFIX.rstrip('/')} annotation; {hint}")
        )
    return problems


def _conflicts(
    values: Mapping[str, Any], annotations: Mapping[str, str], bad: set[str]
) -> list[AnnotationProblem]:
    def is_set(key: str) -> bool:
        return key not in bad and PREFIX + key in annotations and bool(values[key])

    def problem(key: str, allowed: str) -> AnnotationProblem:
        return AnnotationProblem(key, annotations[PREFIX + key], allowed)

    problems = []
    if is_set("allow-idle-consumers") and is_set("limit-to-partitions-with-lag"):
        problems.append(
            problem("allow-idle-consumers", "cannot be true together with limit-to-partitions-with-lag=true")
        )
    if is_set("limit-to-partitions-with-lag") and is_set("even-partition-distribution"):
        problems.append(
            problem(
                "limit-to-partitions-with-lag",
                "cannot be true together with even-partition-distribution=true",
            )
        )
    if "kafka-topics" not in bad and not is_set(trigger.KEY):  # a Trigger has exactly one topic
        topics: tuple[str, ...] = values["kafka-topics"]
        found = f"found {len(topics)} ({', '.join(topics)})" if topics else "found none (all topics)"
        if len(topics) != 1:
            for key in ("limit-to-partitions-with-lag", "even-partition-distribution", "kafka-partitions"):
                if is_set(key):
                    problems.append(problem(key, f"needs exactly one topic in kafka-topics, {found}"))
    if is_set("cloudevents-types") and "cloudevents" not in bad and not values["cloudevents"]:
        problems.append(problem("cloudevents-types", "needs cloudevents=true"))
    if (
        "min-replicas" not in bad
        and "max-replicas" not in bad
        and values["min-replicas"] > values["max-replicas"]
    ):
        max_shown = annotations.get(PREFIX + "max-replicas", f"{values['max-replicas']}, the default")
        problems.append(
            AnnotationProblem(
                "min-replicas",
                annotations[PREFIX + "min-replicas"],
                f"at most max-replicas ({max_shown})",
            )
        )
    return problems


def _last_active(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        return parse_rfc3339(raw.strip())
    except ValueError:
        return None


# RFC 3339's grammar (``fromisoformat`` alone also takes ISO 8601 forms RFC 3339 does not: dates only,
# no offset, basic format); ``fromisoformat`` then checks the values.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-5][0-9])"
)


def parse_rfc3339(text: str) -> datetime:
    """An RFC 3339 time (e.g. ``2026-11-26T12:00:00Z``) as an aware UTC datetime; ValueError otherwise."""
    if _RFC3339.fullmatch(text) is None:
        raise ValueError(f"{text!r} is not an RFC 3339 time such as 2026-11-26T12:00:00Z")
    try:
        return datetime.fromisoformat(text.upper()).astimezone(UTC)
    except (ValueError, OverflowError) as error:
        raise ValueError(f"{text!r} is not a valid RFC 3339 time: {error}") from None


def format_rfc3339(moment: datetime) -> str:
    """An aware datetime as RFC 3339 in UTC, e.g. ``2026-11-26T12:00:00Z`` (microseconds when present)."""
    if moment.tzinfo is None:
        raise ValueError("format_rfc3339 needs a timezone-aware datetime")
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"
