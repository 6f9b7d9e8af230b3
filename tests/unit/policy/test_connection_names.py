"""Annotations that name a connection the controller does not know are refused, each with what exists."""

from __future__ import annotations

import pytest

from autoscaler.model import PREFIX
from autoscaler.policy import annotations as policy_annotations
from autoscaler.policy import connection_names
from autoscaler.policy.annotations import ScalingPolicy

KNOWN = {"kafka": frozenset({"default", "payments"}), "redis": frozenset({"cache"})}


def policy_of(**keys: str) -> tuple[ScalingPolicy, dict[str, str]]:
    full = {PREFIX + key.replace("_", "-"): value for key, value in keys.items()}
    parsed = policy_annotations.parse(full)
    assert parsed is not None
    return parsed, full


def test_a_known_kafka_connection_and_an_unset_one_pass() -> None:
    for keys in ({"kafka_group": "g", "kafka_connection": "payments"}, {"kafka_group": "g"}):
        assert connection_names.unknown(*policy_of(**keys), KNOWN) == ()


def test_an_unknown_kafka_connection_names_the_value_and_the_known_ones() -> None:
    (problem,) = connection_names.unknown(*policy_of(kafka_group="g", kafka_connection="billing"), KNOWN)
    assert (problem.key, problem.value) == ("kafka-connection", "billing")
    assert problem.allowed == "a kafka connection of the connections file; it has: default, payments"


@pytest.mark.parametrize(
    ("keys", "value", "known"),
    [
        ({"redis_stream": "s", "redis_group": "g", "redis_connection": "other"}, "other", "cache"),
        ({"nats_stream": "s", "nats_consumer": "c"}, "default (the default)", "none"),
    ],
)
def test_the_other_sources_need_their_connection_even_the_default(
    keys: dict[str, str], value: str, known: str
) -> None:
    (problem,) = connection_names.unknown(*policy_of(**keys), KNOWN)
    assert problem.value == value
    assert problem.allowed.endswith(f"it has: {known}")
