"""``queue-autoscaler decide`` with the rabbitmq, redis and nats keys: which source won, and holds."""

from __future__ import annotations

import pytest

from autoscaler.policy.document import DocumentError, decide_document
from tests.unit.policy.builders import NOW


def test_the_answer_names_the_source_that_asked_for_the_most_replicas() -> None:
    answer = decide_document(
        {
            "annotations": {
                "rabbitmq-queues": "work",
                "nats-stream": "s",
                "nats-consumer": "c",
                "pending-per-replica": "5",
            },
            "current_replicas": 0,
            "rabbitmq": [{"queue": "work", "vhost": "/", "ready": 10, "unacked": 5}],
            "nats": {"pending": 28, "ack_pending": 2},
        },
        NOW,
    )

    assert (answer["desired_replicas"], answer["source"], answer["rule"]) == (6, "nats", "activate")
    assert "nats pending 30 at pending-per-replica 5 needs 6 replicas" in str(answer["reason"])


def test_a_null_redis_lag_in_the_document_holds() -> None:
    answer = decide_document(
        {
            "annotations": {"redis-stream": "s", "redis-group": "g"},
            "current_replicas": 2,
            "redis": {"lag": None, "pending": 0, "length": 100},
        },
        NOW,
    )

    assert (answer["desired_replicas"], answer["rule"], answer["source"]) == (2, "hold-unreadable", None)


def test_a_source_absent_from_the_document_could_not_be_read_and_holds() -> None:
    answer = decide_document({"annotations": {"rabbitmq-queues": "work"}, "current_replicas": 3}, NOW)

    assert (answer["desired_replicas"], answer["rule"]) == (3, "hold-unreadable")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("rabbitmq", {"queue": "q"}, "rabbitmq must be a list"),
        ("rabbitmq", [{"queue": "q", "ready": -1, "unacked": 0}], "rabbitmq[0].ready"),
        ("redis", {"lag": "7", "pending": 0}, "redis.lag must be an integer >= 0 or null"),
        ("nats", {"pending": None}, "nats.pending"),
    ],
)
def test_malformed_source_fields_are_named(key: str, value: object, message: str) -> None:
    annotations = {
        "rabbitmq-queues": "q",
        "redis-stream": "s",
        "redis-group": "g",
        "nats-stream": "n",
        "nats-consumer": "c",
    }
    with pytest.raises(DocumentError, match=message.replace("[", r"\[").replace("]", r"\]")):
        decide_document({"annotations": annotations, "current_replicas": 0, key: value}, NOW)
