"""Small builders shared by the policy tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from autoscaler.model import Decision, Observation, PartitionOffsets
from autoscaler.policy.annotations import PREFIX, ScalingPolicy, parse
from autoscaler.policy.decide import DecisionState, decide

P = PREFIX
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def policy(**keys: str | None) -> ScalingPolicy:
    """A policy from annotations given as keyword arguments (``_`` for ``-``); kafka-group ``g`` by default.

    A None value removes the key, e.g. ``policy(kafka_group=None, http_service="web")`` for HTTP only.
    """
    found: dict[str, str] = {P + "kafka-group": "g"}
    for name, value in keys.items():
        key = P + name.replace("_", "-")
        if value is None:
            found.pop(key, None)
        else:
            found[key] = value
    result = parse(found)
    assert result is not None
    return result


def lagging(*lags: int, topic: str = "t", committed: int = 100) -> tuple[PartitionOffsets, ...]:
    """One partition per lag value, numbered from 0, each committed at ``committed``."""
    return tuple(
        PartitionOffsets(topic, number, committed=committed, end=committed + lag, start=0)
        for number, lag in enumerate(lags)
    )


def seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


class Run:
    """Steps one target through ticks, carrying the state and the replica count like the control loop."""

    def __init__(self, scaling: ScalingPolicy, *, replicas: int, state: DecisionState | None = None) -> None:
        self.policy = scaling
        self.replicas = replicas
        self.state = state if state is not None else DecisionState.initial(scaling.last_active)
        self.now = NOW

    def tick(
        self,
        partitions: tuple[PartitionOffsets, ...] | None,
        *,
        at: timedelta = timedelta(0),
        concurrency: int | None = None,
        kafka_error: str | None = None,
    ) -> Decision:
        """Decides at NOW + ``at`` and applies the decision."""
        self.now = NOW + at
        observation = Observation(self.replicas, partitions, kafka_error=kafka_error, concurrency=concurrency)
        decision, self.state = decide(self.policy, observation, self.state, self.now)
        self.replicas = decision.desired_replicas
        return decision


IDLE_LAG = lagging(0, 0, 0, 0)
