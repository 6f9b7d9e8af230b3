"""The drain-within annotation: rate-aware sizing's one key."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from autoscaler.errors import PolicyError
from autoscaler.model import Decision, Observation, PartitionOffsets, Rule
from autoscaler.policy import document, reasons
from autoscaler.policy.annotations import PREFIX, parse
from autoscaler.policy.decide import DecisionState, decide
from autoscaler.policy.rates import Rates, Reading
from tests.unit.policy.builders import NOW, policy, seconds


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


# --- sizing on the measured rates ----------------------------------------------------------------------


def offsets(added: int, done: int, *, partitions: int = 4) -> tuple[PartitionOffsets, ...]:
    """``added`` records in all, ``done`` of them committed, spread evenly over the partitions."""

    def share(total: int, p: int) -> int:
        return total // partitions + (1 if p < total % partitions else 0)

    return tuple(
        PartitionOffsets("t", p, committed=share(done, p), end=share(added, p), start=0)
        for p in range(partitions)
    )


class Target:
    """One target stepped once a second like the control loop, with its ready replicas."""

    def __init__(self, **keys: str) -> None:
        self.policy = policy(drain_within="30s", **keys)
        self.state = DecisionState.initial(None)
        self.replicas = 1
        self.second = 0

    def tick(self, added: int, done: int, *, ready: int | None = None, partitions: int = 4) -> Decision:
        observation = Observation(
            self.replicas,
            offsets(added, done, partitions=partitions),
            ready_replicas=self.replicas if ready is None else ready,
        )
        decision, self.state = decide(self.policy, observation, self.state, NOW + seconds(self.second))
        self.replicas = decision.desired_replicas
        self.second += 1
        return decision


def test_until_the_rates_are_measured_the_fixed_threshold_sizes() -> None:
    target = Target()
    first = target.tick(added=200, done=0)
    [reading] = first.readings
    assert reading.rate is not None
    assert reading.rate.needed is None
    assert first.desired_replicas == 4  # ceil(200 / 10) = 20, capped at 4 partitions
    assert "rates not measured yet" in reasons.explain(first)


def test_with_rates_known_the_count_drains_the_backlog_within_drain_within() -> None:
    target = Target(max_replicas="100")
    target.replicas = 2
    # 2 ready replicas each doing 10/s with 1,000 waiting; 30/s arriving.
    decision = target.tick(added=1000, done=0)
    for second in range(1, 6):
        decision = target.tick(added=1000 + 30 * second, done=20 * second, ready=2, partitions=16)
    [reading] = decision.readings
    assert reading.rate is not None
    assert reading.rate.arrival == pytest.approx(30)
    assert reading.rate.per_replica == pytest.approx(10)
    # (30 + (1150 - 100) / 30) / 10 = 6.5 -> 7
    assert reading.rate.needed == 7
    assert decision.desired_replicas == 7
    assert "drain-within 30s needs 7 replicas" in reasons.explain(decision)


def test_the_rate_count_is_capped_at_the_partitions_as_usual() -> None:
    target = Target()
    decision = target.tick(added=10_000, done=0, ready=1)
    for second in range(1, 5):
        decision = target.tick(added=10_000, done=5 * second, ready=1)
    [reading] = decision.readings
    assert reading.rate is not None
    assert reading.rate.needed is not None
    assert reading.rate.needed > 4
    assert decision.desired_replicas == 4


def test_without_a_ready_replica_the_rate_stays_unknown_and_work_still_wakes_the_target() -> None:
    target = Target()
    target.replicas = 0
    decision = target.tick(added=50, done=0, ready=0)
    assert decision.desired_replicas == 4  # thresholds: ceil(50 / 10) capped at 4
    decision = target.tick(added=80, done=0, ready=0)
    [reading] = decision.readings
    assert reading.rate is not None
    assert reading.rate.per_replica is None
    assert decision.desired_replicas >= 1


def test_a_stuck_consumer_never_takes_the_target_to_zero_while_work_waits() -> None:
    target = Target(scale_to_zero_after="10s", scale_down_window="5s")
    for second in range(5):
        target.tick(added=400 + 20 * second, done=20 * second, ready=1)
    for second in range(5, 120):
        decision = target.tick(added=400 + 20 * second, done=80, ready=1)
        assert decision.desired_replicas >= 1
        assert decision.active


@pytest.mark.parametrize(("slow", "rule"), [(20.0, Rule.HOLD), (50.0, Rule.SCALE_DOWN_WINDOW)])
def test_scale_downs_wait_while_the_arrival_rate_rises(slow: float, rule: Rule) -> None:
    scaling = policy(drain_within="30s", scale_down_window="5s")
    last = Reading(NOW - seconds(1), added=1000, done=1000, consumers=4)
    measured = Rates(last=last, anchor=last, arrival=50.0, arrival_slow=slow, per_replica=20.0)
    state = DecisionState(idle_since=None, history=((NOW - seconds(10), 4),), committed=(), rates=measured)
    # 50/s arriving at 20/s per replica with nothing waiting: 3 replicas would do (3 with headroom too).
    observation = Observation(4, offsets(1050, 1050), ready_replicas=4)
    decision, _ = decide(scaling, observation, state, NOW)
    [reading] = decision.readings
    assert reading.rate is not None
    assert reading.rate.needed == 3
    assert reading.rate.rising is (rule is Rule.HOLD)
    assert decision.rule is rule


def test_the_window_remembers_the_count_with_headroom() -> None:
    scaling = policy(drain_within="30s", scale_down_window="1m")
    last = Reading(NOW - seconds(1), added=1000, done=1000, consumers=4)
    measured = Rates(last=last, anchor=last, arrival=57.0, arrival_slow=57.0, per_replica=20.0)
    state = DecisionState(idle_since=None, history=(), committed=(), rates=measured)
    observation = Observation(4, offsets(1057, 1057), ready_replicas=4)
    decision, after = decide(scaling, observation, state, NOW)
    [reading] = decision.readings
    assert reading.rate is not None
    # 57/s at 20/s: 3 replicas; at 90 % of the rate (18/s) 4: the window holds 4, so no scale-down.
    assert (reading.rate.needed, reading.rate.keep) == (3, 4)
    assert after.history[-1] == (NOW, 4)
    assert decision.desired_replicas == 4


def test_the_decide_document_shows_the_rates_and_carries_them_in_its_state() -> None:
    base = {
        "annotations": {"kafka-group": "g", "drain-within": "30s"},
        "current_replicas": 1,
        "ready_replicas": 1,
    }

    def parts(added: int, done: int) -> list[dict[str, object]]:
        return [{"topic": "t", "partition": 0, "committed": done, "end": added}]

    first = document.decide_document(
        {**base, "partitions": parts(300, 0), "now": "2026-11-26T12:00:00Z"}, NOW
    )
    assert first["rates"] == {
        "drain_within_s": 30.0,
        "arrival_per_s": None,
        "per_replica_per_s": None,
        "replicas": None,
        "keep": None,
        "rising": False,
    }
    second = document.decide_document(
        {**base, "partitions": parts(320, 20), "now": "2026-11-26T12:00:01Z", "state": first["state"]}, NOW
    )
    rates_used = second["rates"]
    assert isinstance(rates_used, dict)
    assert rates_used["arrival_per_s"] == 20.0
    assert rates_used["per_replica_per_s"] == 20.0
    # (20 + 300 / 30) / 20 = 1.5 -> 2, capped at the one partition.
    assert rates_used["replicas"] == 2
    assert second["desired_replicas"] == 1
    assert json.loads(json.dumps(second["state"])) == second["state"]
    again = document.state_from_json(second["state"])
    assert again.rates.per_replica == pytest.approx(20.0)


def test_a_malformed_rates_state_is_a_document_error_naming_the_field() -> None:
    with pytest.raises(document.DocumentError, match=r"state\.rates\.arrival must be a number"):
        document.state_from_json({"rates": {"arrival": "fast"}})
    with pytest.raises(document.DocumentError, match=r"state\.rates\.last\.added"):
        document.state_from_json({"rates": {"last": {"at": "2026-11-26T12:00:00Z", "added": -1}}})
