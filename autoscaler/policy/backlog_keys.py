"""The annotation keys of the RabbitMQ, Redis Streams and NATS JetStream sources -> their frozen policies.

``annotations.parse`` calls ``parse_sources`` and reports its problems with its own, all at once. A source
is enabled by its naming key (``rabbitmq-queues`` or ``rabbitmq-queue-pattern``, ``redis-stream``,
``nats-stream``); a source without the other keys it needs, and two keys that exclude each other, are
problems.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from autoscaler.errors import AnnotationProblem
from autoscaler.model import PREFIX

_MAX_COUNT = 2**63 - 1


class RabbitMQCount(StrEnum):
    READY_UNACKED = "ready+unacked"
    READY = "ready"


class RabbitMQOperation(StrEnum):
    SUM = "sum"
    MAX = "max"
    AVG = "avg"


class RedisCount(StrEnum):
    LAG_PENDING = "lag+pending"
    LAG = "lag"
    PENDING = "pending"
    LENGTH = "length"


class NatsCount(StrEnum):
    PENDING_ACK_PENDING = "pending+ack-pending"
    PENDING = "pending"


@dataclass(frozen=True, slots=True)
class RabbitMQPolicy:
    queues: tuple[str, ...]
    queue_pattern: str | None
    vhost: str
    connection: str
    count: RabbitMQCount
    operation: RabbitMQOperation
    per_replica: int
    activation: int


@dataclass(frozen=True, slots=True)
class RedisPolicy:
    stream: str
    group: str
    connection: str
    count: RedisCount
    per_replica: int
    activation: int


@dataclass(frozen=True, slots=True)
class NatsPolicy:
    stream: str
    consumer: str
    connection: str
    count: NatsCount
    per_replica: int
    activation: int


@dataclass(frozen=True, slots=True)
class SourcePolicies:
    rabbitmq: RabbitMQPolicy | None = None
    redis: RedisPolicy | None = None
    nats: NatsPolicy | None = None


class _Invalid(Exception):
    def __init__(self, allowed: str) -> None:
        super().__init__(allowed)
        self.allowed = allowed


def _integer(low: int) -> Callable[[str], int]:
    allowed = "an integer > 0" if low == 1 else f"an integer >= {low}"

    def parse(text: str) -> int:
        if not re.fullmatch(r"[0-9]{1,19}", text) or not low <= int(text) <= _MAX_COUNT:
            raise _Invalid(f"{allowed}, at most {_MAX_COUNT}")
        return int(text)

    return parse


def _name(what: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not text or len(text) > 255 or not text.isprintable():
            raise _Invalid(f"a non-empty {what} of at most 255 printable characters")
        return text

    return parse


def _queues(text: str) -> tuple[str, ...]:
    items = [item.strip() for item in text.split(",")]
    if not all(item and len(item) <= 255 and item.isprintable() for item in items):
        raise _Invalid("a comma list of non-empty RabbitMQ queue names")
    return tuple(dict.fromkeys(items))


def _pattern(text: str) -> str:
    try:
        re.compile(text)
    except re.error as error:
        raise _Invalid(f"a regular expression (matched against whole queue names): {error}") from None
    return text


def _connection(text: str) -> str:
    if not re.fullmatch(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?", text):
        raise _Invalid("a connection name from the connections file: lowercase letters, digits and '-'")
    return text


def _one_of(kind: type[StrEnum]) -> Callable[[str], StrEnum]:
    names = [member.value for member in kind]

    def parse(text: str) -> StrEnum:
        if text not in names:
            raise _Invalid(" or ".join(names))
        return kind(text)

    return parse


_KEYS: dict[str, tuple[Callable[[str], Any], object]] = {
    "rabbitmq-queues": (_queues, ()),
    "rabbitmq-queue-pattern": (_pattern, None),
    "rabbitmq-vhost": (_name("vhost name"), "/"),
    "rabbitmq-connection": (_connection, "default"),
    "rabbitmq-count": (_one_of(RabbitMQCount), RabbitMQCount.READY_UNACKED),
    "rabbitmq-operation": (_one_of(RabbitMQOperation), RabbitMQOperation.SUM),
    "messages-per-replica": (_integer(1), 20),
    "activation-messages": (_integer(0), 0),
    "redis-stream": (_name("stream key"), None),
    "redis-group": (_name("consumer group name"), None),
    "redis-connection": (_connection, "default"),
    "redis-count": (_one_of(RedisCount), RedisCount.LAG_PENDING),
    "entries-per-replica": (_integer(1), 10),
    "activation-entries": (_integer(0), 0),
    "nats-stream": (_name("stream name"), None),
    "nats-consumer": (_name("durable consumer name"), None),
    "nats-connection": (_connection, "default"),
    "nats-count": (_one_of(NatsCount), NatsCount.PENDING_ACK_PENDING),
    "pending-per-replica": (_integer(1), 10),
    "activation-pending": (_integer(0), 0),
}

KEYS: frozenset[str] = frozenset(_KEYS)
ENABLING_KEYS = ("rabbitmq-queues", "rabbitmq-queue-pattern", "redis-stream", "nats-stream")


def parse_sources(annotations: Mapping[str, str]) -> tuple[SourcePolicies, list[AnnotationProblem]]:
    """The three sources' policies (None where not enabled) and every problem with their keys."""
    problems: list[AnnotationProblem] = []
    values: dict[str, Any] = {}
    for key, (parse, default) in _KEYS.items():
        raw = annotations.get(PREFIX + key)
        if raw is None:
            values[key] = default
            continue
        try:
            values[key] = parse(raw.strip())
        except _Invalid as invalid:
            problems.append(AnnotationProblem(key, raw, invalid.allowed))
            values[key] = default
    bad = {p.key for p in problems}

    def present(key: str) -> bool:
        return PREFIX + key in annotations

    def needs(key: str, other: str, source: str) -> None:
        if present(key) and not present(other) and key not in bad:
            problems.append(AnnotationProblem(other, None, f"required with {key}: {source} needs both"))

    if present("rabbitmq-queues") and present("rabbitmq-queue-pattern"):
        problems.append(
            AnnotationProblem(
                "rabbitmq-queue-pattern",
                annotations[PREFIX + "rabbitmq-queue-pattern"],
                "cannot be set together with rabbitmq-queues: name the queues or give a pattern",
            )
        )
    needs("redis-stream", "redis-group", "Redis Streams scaling")
    needs("redis-group", "redis-stream", "Redis Streams scaling")
    needs("nats-stream", "nats-consumer", "NATS JetStream scaling")
    needs("nats-consumer", "nats-stream", "NATS JetStream scaling")
    if problems:
        return SourcePolicies(), problems

    rabbitmq = redis = nats = None
    if present("rabbitmq-queues") or present("rabbitmq-queue-pattern"):
        rabbitmq = RabbitMQPolicy(
            queues=values["rabbitmq-queues"],
            queue_pattern=values["rabbitmq-queue-pattern"],
            vhost=values["rabbitmq-vhost"],
            connection=values["rabbitmq-connection"],
            count=values["rabbitmq-count"],
            operation=values["rabbitmq-operation"],
            per_replica=values["messages-per-replica"],
            activation=values["activation-messages"],
        )
    if present("redis-stream"):
        redis = RedisPolicy(
            stream=values["redis-stream"],
            group=values["redis-group"],
            connection=values["redis-connection"],
            count=values["redis-count"],
            per_replica=values["entries-per-replica"],
            activation=values["activation-entries"],
        )
    if present("nats-stream"):
        nats = NatsPolicy(
            stream=values["nats-stream"],
            consumer=values["nats-consumer"],
            connection=values["nats-connection"],
            count=values["nats-count"],
            per_replica=values["pending-per-replica"],
            activation=values["activation-pending"],
        )
    return SourcePolicies(rabbitmq, redis, nats), problems
