"""The drain-within annotation: rate-aware sizing's one key."""

from __future__ import annotations

from datetime import timedelta

import pytest

from autoscaler.errors import PolicyError
from autoscaler.policy.annotations import PREFIX, parse


def test_drain_within_is_unset_by_default_and_parses_as_a_duration() -> None:
    plain = parse({PREFIX + "kafka-group": "g"})
    assert plain is not None
    assert plain.drain_within is None
    rated = parse({PREFIX + "kafka-group": "g", PREFIX + "drain-within": "1m30s"})
    assert rated is not None
    assert rated.drain_within == timedelta(seconds=90)


@pytest.mark.parametrize("value", ["0s", "soon", "-5s", ""])
def test_drain_within_must_be_a_positive_duration(value: str) -> None:
    with pytest.raises(PolicyError) as raised:
        parse({PREFIX + "kafka-group": "g", PREFIX + "drain-within": value})
    [problem] = raised.value.problems
    assert problem.key == "drain-within"
    assert "greater than 0" in problem.allowed
