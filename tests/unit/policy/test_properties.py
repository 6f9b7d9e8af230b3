"""Properties that hold for any policy, observation, state and time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoscaler.errors import PolicyError
from autoscaler.model import Observation, PartitionOffsets, Rule
from autoscaler.policy import document, lag, reasons
from autoscaler.policy.annotations import (
    KNOWN_KEYS,
    OffsetResetPolicy,
    ScalingPolicy,
    format_rfc3339,
    parse,
    parse_rfc3339,
)
from autoscaler.policy.decide import DecisionState, decide
from tests.unit.policy.builders import NOW, P

# The autouse asyncio-leak fixture is function-scoped and harmless to share between examples.
relaxed = settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)

offsets_or_none = st.none() | st.integers(0, 10_000)


@st.composite
def offsets_lists(draw: st.DrawFn) -> tuple[PartitionOffsets, ...]:
    numbers = draw(
        st.lists(st.tuples(st.sampled_from(["t", "u"]), st.integers(0, 15)), unique=True, max_size=16)
    )
    return tuple(
        PartitionOffsets(topic, number, draw(offsets_or_none), draw(offsets_or_none), draw(offsets_or_none))
        for topic, number in numbers
    )


@st.composite
def policies(draw: st.DrawFn) -> ScalingPolicy:
    found: dict[str, str] = {}
    if draw(st.booleans()):
        found["http-service"] = "web"
        found["concurrency-per-replica"] = str(draw(st.integers(1, 50)))
    if not found or draw(st.booleans()):
        found["kafka-group"] = "g"
    low = draw(st.integers(0, 10))
    found["min-replicas"] = str(low)
    found["max-replicas"] = str(draw(st.integers(low, 40)))
    found["lag-per-replica"] = str(draw(st.integers(1, 100)))
    found["activation-lag"] = str(draw(st.integers(0, 100)))
    found["scale-to-zero-after"] = f"{draw(st.integers(0, 600))}s"
    found["scale-down-window"] = f"{draw(st.integers(0, 120))}s"
    found["offset-reset-policy"] = draw(st.sampled_from(["latest", "earliest"]))
    cap = draw(
        st.sampled_from(
            ["", "allow-idle-consumers", "limit-to-partitions-with-lag", "even-partition-distribution"]
        )
    )
    if cap:
        found[cap] = "true"
    if cap in ("limit-to-partitions-with-lag", "even-partition-distribution") or draw(st.booleans()):
        found["kafka-topics"] = "t"
    for flag in ("exclude-persistent-lag", "scale-to-zero-on-invalid-offset"):
        found[flag] = draw(st.sampled_from(["true", "false"]))
    if draw(st.booleans()):
        found["fallback-replicas"] = str(draw(st.integers(0, 50)))
    if draw(st.integers(0, 9)) == 0:
        found["paused-replicas"] = str(draw(st.integers(0, 50)))
    if draw(st.integers(0, 9)) == 0:
        found["paused"] = "true"
    result = parse({P + key: value for key, value in found.items()})
    assert result is not None
    return result


observations = st.builds(
    Observation,
    current_replicas=st.integers(0, 60),
    partitions=st.none() | offsets_lists(),
    kafka_error=st.none() | st.just("timeout"),
    concurrency=st.none() | st.integers(0, 500),
)

moments = st.integers(-7200, 7200).map(lambda s: NOW + timedelta(seconds=s))

states = st.builds(
    DecisionState,
    idle_since=st.none() | moments,
    history=st.lists(st.tuples(moments, st.integers(0, 60)), max_size=5).map(lambda h: tuple(sorted(h))),
    committed=st.just(()),
)


def is_paused(scaling: ScalingPolicy) -> bool:
    return scaling.paused or scaling.paused_replicas is not None


@relaxed
@given(policies(), st.lists(st.tuples(st.integers(0, 120), observations), min_size=1, max_size=12), states)
def test_desired_replicas_stay_within_min_and_max_unless_paused(
    scaling: ScalingPolicy, ticks: list[tuple[int, Observation]], state: DecisionState
) -> None:
    now = NOW
    for step, observation in ticks:
        now += timedelta(seconds=step)
        decision, state = decide(scaling, observation, state, now)
        if not is_paused(scaling):
            assert scaling.min_replicas <= decision.desired_replicas <= scaling.max_replicas
        assert decision.desired_replicas >= 0
        assert isinstance(decision.rule, Rule)
        assert reasons.explain(decision).endswith(".")


@relaxed
@given(policies(), observations, states, moments)
def test_never_goes_below_current_when_lag_is_unreadable(
    scaling: ScalingPolicy, observation: Observation, state: DecisionState, now: datetime
) -> None:
    unreadable = Observation(observation.current_replicas, None, "timeout", observation.concurrency)
    decision, new_state = decide(scaling, unreadable, state, now)
    if not is_paused(scaling) and scaling.uses_kafka:
        assert decision.desired_replicas >= min(observation.current_replicas, scaling.max_replicas)
        assert new_state.idle_since == state.idle_since or decision.active


@relaxed
@given(policies(), observations, states, moments)
def test_the_state_survives_a_json_round_trip(
    scaling: ScalingPolicy, observation: Observation, state: DecisionState, now: datetime
) -> None:
    _, new_state = decide(scaling, observation, state, now)
    assert document.state_from_json(document.state_to_json(new_state)) == new_state


known_keys = st.sampled_from(sorted(P + key for key in KNOWN_KEYS))
plausible_values = st.sampled_from(
    ["", "0", "1", "-1", "true", "false", "5m", "0-3,8", "t", "a,b", "1e3", "NaN"]
)


@relaxed
@given(
    st.dictionaries(
        known_keys | st.text().map(lambda text: P + text) | st.text(),
        plausible_values | st.text(),
        max_size=12,
    )
)
def test_the_parser_raises_nothing_but_policy_error(found: dict[str, str]) -> None:
    outcome: ScalingPolicy | PolicyError | None
    try:
        outcome = parse(found)
    except PolicyError as error:
        outcome = error
    if isinstance(outcome, PolicyError):
        assert outcome.problems
        assert all(isinstance(problem.allowed, str) and problem.allowed for problem in outcome.problems)


@relaxed
@given(
    st.integers(-5, 10_000) | st.none(),
    st.integers(0, 10_000) | st.none(),
    st.integers(0, 10_000) | st.none(),
    st.sampled_from(OffsetResetPolicy),
    st.booleans(),
)
def test_partition_lag_is_never_negative(
    committed: int | None, end: int | None, start: int | None, reset: OffsetResetPolicy, invalid_is_zero: bool
) -> None:
    offsets = PartitionOffsets("t", 0, committed, end, start)
    assert (
        lag.partition_lag(offsets, offset_reset_policy=reset, scale_to_zero_on_invalid_offset=invalid_is_zero)
        >= 0
    )


@relaxed
@given(policies(), offsets_lists(), offsets_lists())
def test_target_lag_is_never_negative_and_sizing_never_exceeds_activation(
    scaling: ScalingPolicy, previous: tuple[PartitionOffsets, ...], current: tuple[PartitionOffsets, ...]
) -> None:
    committed = {p.topic_partition: p.committed for p in previous if p.committed is not None}
    result = lag.compute(scaling, current, committed)
    assert 0 <= result.sizing_lag <= result.activation_lag
    assert 0 <= result.partitions_with_lag <= result.partition_count


@relaxed
@given(st.datetimes(timezones=st.just(UTC)))
def test_rfc_3339_formatting_parses_back(moment: datetime) -> None:
    assert parse_rfc3339(format_rfc3339(moment)) == moment
