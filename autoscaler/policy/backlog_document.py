"""The ``rabbitmq``, ``redis`` and ``nats`` keys of a ``queue-autoscaler decide`` document -> Observation
fields. Each key absent or null means that source could not be read (the decision holds on it)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from autoscaler.model import ConsumerBacklog, QueueCounts, StreamBacklog

NOT_READ = "not in the document (could not be read)"


def observed(doc: Mapping[str, object], error: Callable[[str], Exception]) -> dict[str, Any]:
    """Observation keyword arguments for the three sources; ``error(message)`` builds what is raised for a
    malformed field."""

    def count(value: object, where: str, *, nullable: bool = False) -> int | None:
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            allowed = "an integer >= 0" + (" or null" if nullable else "")
            raise error(f"{where} must be {allowed}, got {value!r}")
        return value

    def required(value: object, where: str) -> int:
        found = count(value, where)
        assert found is not None
        return found

    def obj(value: object, where: str, keys: str) -> Mapping[str, object]:
        if not isinstance(value, Mapping):
            raise error(f"{where} must be an object with {keys}")
        return value

    found: dict[str, Any] = {}
    raw = doc.get("rabbitmq")
    if raw is None:
        found["rabbitmq_error"] = NOT_READ
    else:
        if not isinstance(raw, list):
            raise error("rabbitmq must be a list of {queue, vhost, ready, unacked} objects")
        queues = []
        for i, entry in enumerate(raw):
            where = f"rabbitmq[{i}]"
            item = obj(entry, where, "queue, vhost, ready, unacked")
            name, vhost = item.get("queue"), item.get("vhost", "/")
            if not isinstance(name, str) or not name or not isinstance(vhost, str):
                raise error(f"{where}.queue must be a non-empty string (and vhost a string)")
            queues.append(
                QueueCounts(
                    name,
                    vhost,
                    required(item.get("ready"), f"{where}.ready"),
                    required(item.get("unacked"), f"{where}.unacked"),
                )
            )
        found["rabbitmq"] = tuple(queues)
    raw = doc.get("redis")
    if raw is None:
        found["redis_error"] = NOT_READ
    else:
        item = obj(raw, "redis", "lag (may be null), pending, length")
        found["redis"] = StreamBacklog(
            lag=count(item.get("lag"), "redis.lag", nullable=True),
            pending=required(item.get("pending", 0), "redis.pending"),
            length=count(item.get("length"), "redis.length", nullable=True),
        )
    raw = doc.get("nats")
    if raw is None:
        found["nats_error"] = NOT_READ
    else:
        item = obj(raw, "nats", "pending, ack_pending")
        found["nats"] = ConsumerBacklog(
            pending=required(item.get("pending"), "nats.pending"),
            ack_pending=required(item.get("ack_pending", 0), "nats.ack_pending"),
        )
    return found
