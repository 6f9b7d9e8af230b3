"""Annotation parsing: typed values, defaults, every error at once, conflicts."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from autoscaler.errors import AnnotationProblem, PolicyError
from autoscaler.policy import backlog_keys
from autoscaler.policy.annotations import (
    KNOWN_KEYS,
    OffsetResetPolicy,
    ScalingPolicy,
    format_rfc3339,
    parse,
    parse_rfc3339,
)
from tests.unit.policy.builders import P, policy


def problems_of(**keys: str) -> tuple[AnnotationProblem, ...]:
    found = {P + "kafka-group": "g"} | {P + name.replace("_", "-"): value for name, value in keys.items()}
    with pytest.raises(PolicyError) as caught:
        parse(found)
    return caught.value.problems


def test_a_deployment_without_kafka_group_or_http_service_is_not_a_target() -> None:
    assert parse({}) is None
    assert parse({"app": "web", P + "lag-per-replica": "nonsense"}) is None


def test_kafka_group_alone_gives_every_default() -> None:
    assert parse({P + "kafka-group": "orders"}) == ScalingPolicy(
        kafka_group="orders",
        kafka_topics=(),
        kafka_bootstrap=None,
        kafka_partitions=None,
        lag_per_replica=10,
        activation_lag=0,
        min_replicas=0,
        max_replicas=100,
        scale_to_zero_after=timedelta(minutes=5),
        scale_down_window=timedelta(minutes=1),
        offset_reset_policy=OffsetResetPolicy.LATEST,
        allow_idle_consumers=False,
        limit_to_partitions_with_lag=False,
        even_partition_distribution=False,
        exclude_persistent_lag=False,
        scale_to_zero_on_invalid_offset=False,
        fallback_replicas=None,
        paused_replicas=None,
        paused=False,
        http_service=None,
        http_port=None,
        http_host=None,
        concurrency_per_replica=10,
        max_pending=1000,
        activation_timeout=timedelta(seconds=60),
        cloudevents=False,
        cloudevents_types=None,
        last_active=None,
    )


def test_http_service_alone_makes_a_target_without_kafka() -> None:
    parsed = parse({P + "http-service": "web"})
    assert parsed is not None
    assert parsed.uses_http
    assert not parsed.uses_kafka


def test_the_key_table_covers_every_policy_field() -> None:
    attributes = {key.replace("-", "_") for key in KNOWN_KEYS - backlog_keys.KEYS} | {"sources"}
    assert attributes == {f.name for f in dataclasses.fields(ScalingPolicy)}


@pytest.mark.parametrize(
    ("key", "value", "attribute", "expected"),
    [
        ("kafka-topics", "orders, payments,orders", "kafka_topics", ("orders", "payments")),
        ("kafka-bootstrap", "kafka-0:9092, [::1]:9093", "kafka_bootstrap", ("kafka-0:9092", "[::1]:9093")),
        ("lag-per-replica", "25", "lag_per_replica", 25),
        ("activation-lag", "0", "activation_lag", 0),
        ("min-replicas", "2", "min_replicas", 2),
        ("max-replicas", "0", "max_replicas", 0),
        ("scale-to-zero-after", "500ms", "scale_to_zero_after", timedelta(milliseconds=500)),
        ("scale-to-zero-after", "30s", "scale_to_zero_after", timedelta(seconds=30)),
        ("scale-down-window", "5m", "scale_down_window", timedelta(minutes=5)),
        ("scale-down-window", "1h", "scale_down_window", timedelta(hours=1)),
        ("scale-down-window", "1m30s", "scale_down_window", timedelta(seconds=90)),
        ("scale-down-window", "0s", "scale_down_window", timedelta(0)),
        ("offset-reset-policy", "earliest", "offset_reset_policy", OffsetResetPolicy.EARLIEST),
        ("allow-idle-consumers", "true", "allow_idle_consumers", True),
        ("exclude-persistent-lag", "true", "exclude_persistent_lag", True),
        ("scale-to-zero-on-invalid-offset", "false", "scale_to_zero_on_invalid_offset", False),
        ("fallback-replicas", "0", "fallback_replicas", 0),
        ("paused-replicas", "3", "paused_replicas", 3),
        ("paused", "true", "paused", True),
        ("http-service", "web-api", "http_service", "web-api"),
        ("http-port", "8080", "http_port", 8080),
        ("http-port", "http-alt", "http_port", "http-alt"),
        ("http-host", "Orders.Example.com", "http_host", "orders.example.com"),
        ("concurrency-per-replica", "4", "concurrency_per_replica", 4),
        ("max-pending", "50", "max_pending", 50),
        ("activation-timeout", "2m", "activation_timeout", timedelta(minutes=2)),
        ("cloudevents", "true", "cloudevents", True),
        (
            "cloudevents-types",
            "order.created, order.paid",
            "cloudevents_types",
            {"order.created", "order.paid"},
        ),
    ],
)
def test_each_key_parses_into_its_typed_value(key: str, value: str, attribute: str, expected: object) -> None:
    needs = {P + "cloudevents": "true"} if key == "cloudevents-types" else {}
    parsed = parse({P + "kafka-group": "g", P + key: value, **needs})
    assert getattr(parsed, attribute) == expected


def test_kafka_partitions_take_numbers_and_ranges() -> None:
    parsed = policy(kafka_topics="t", kafka_partitions="0-3,8, 10-10")
    assert parsed.kafka_partitions == frozenset({0, 1, 2, 3, 8, 10})


def test_values_are_read_without_surrounding_whitespace() -> None:
    assert policy(lag_per_replica=" 7\n", paused="true ").lag_per_replica == 7


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("kafka-group", " ", "a non-empty consumer group name"),
        (
            "kafka-topics",
            "orders,,payments",
            "a comma list of Kafka topic names (letters, digits, '.', '_', '-')",
        ),
        ("kafka-topics", "orders/eu", "a comma list of Kafka topic names (letters, digits, '.', '_', '-')"),
        ("kafka-bootstrap", "kafka-0", "a comma list of host:port Kafka brokers"),
        ("kafka-bootstrap", "kafka-0:70000", "a comma list of host:port Kafka brokers"),
        ("lag-per-replica", "0", "an integer > 0"),
        ("lag-per-replica", "-5", "an integer > 0"),
        ("lag-per-replica", "1.5", "an integer > 0"),
        ("lag-per-replica", "ten", "an integer > 0"),
        ("lag-per-replica", "9" * 5000, "an integer from 1 to 9223372036854775807"),
        ("activation-lag", "-1", "an integer >= 0"),
        ("min-replicas", "", "an integer >= 0"),
        ("max-replicas", "3000000000", "an integer from 0 to 2147483647"),
        ("scale-to-zero-after", "5", "a duration such as 500ms, 30s, 5m or 1h"),
        ("scale-to-zero-after", "5min", "a duration such as 500ms, 30s, 5m or 1h"),
        ("scale-to-zero-after", "-1s", "a duration such as 500ms, 30s, 5m or 1h"),
        ("scale-to-zero-after", "1.5s", "a duration such as 500ms, 30s, 5m or 1h"),
        ("scale-down-window", "8761h", "a duration of at most 8760h"),
        ("scale-down-window", "9" * 400 + "h", "a duration of at most 8760h"),
        ("activation-timeout", "0s", "a duration such as 500ms, 30s, 5m or 1h, greater than 0"),
        ("offset-reset-policy", "smallest", "latest or earliest"),
        ("allow-idle-consumers", "True", "true or false"),
        ("paused", "yes", "true or false"),
        ("cloudevents", "1", "true or false"),
        ("fallback-replicas", "-1", "an integer >= 0"),
        ("paused-replicas", "two", "an integer >= 0"),
        (
            "http-service",
            "Web",
            "a Service name: lowercase letters, digits and '-', starting with a letter, at most 63",
        ),
        ("http-port", "0", "a port number from 1 to 65535 (or a Service port name)"),
        ("http-port", "65536", "a port number from 1 to 65535 (or a Service port name)"),
        (
            "http-port",
            "web--port",
            "a port number from 1 to 65535 or a Service port name (at most 15 lowercase letters, digits "
            "and '-', with a letter, no '--')",
        ),
        ("http-host", "bad_host.example.com", "a DNS host name such as worker.example.com"),
        ("concurrency-per-replica", "0", "an integer > 0"),
        ("max-pending", "0", "an integer > 0"),
        ("cloudevents-types", "a,,b", "a comma list of non-empty CloudEvents type values"),
    ],
)
def test_each_bad_value_is_reported_with_what_is_allowed(key: str, value: str, allowed: str) -> None:
    extra = {"kafka-topics": "t"} if key == "kafka-partitions" else {}
    assert problems_of(**{key: value}, **extra) == (AnnotationProblem(key, value, allowed),)


@pytest.mark.parametrize("value", ["3-1", "a", "", "1,,2", "100000", "0-100000", "-1"])
def test_bad_kafka_partitions_are_reported(value: str) -> None:
    (problem,) = problems_of(kafka_topics="t", kafka_partitions=value)
    assert problem.key == "kafka-partitions"
    assert problem.value == value
    assert "0-3,8" in problem.allowed


def test_a_problem_reads_as_key_value_and_what_is_allowed() -> None:
    (problem,) = problems_of(lag_per_replica="0")
    assert str(problem) == "lag-per-replica='0': an integer > 0"


def test_every_bad_key_is_reported_at_once_in_contract_order() -> None:
    problems = problems_of(
        paused="maybe", lag_per_replica="0", scale_down_window="soon", offset_reset_policy="oldest"
    )
    assert [p.key for p in problems] == [
        "lag-per-replica",
        "scale-down-window",
        "offset-reset-policy",
        "paused",
    ]
    assert [p.value for p in problems] == ["0", "soon", "oldest", "maybe"]


def test_an_unknown_key_with_our_prefix_is_a_problem_that_suggests_the_known_one() -> None:
    (problem,) = problems_of(lag_per_replcia="5")
    assert problem == AnnotationProblem(
        "lag-per-replcia", "5", "not a queue-autoscaler.dev annotation; did you mean lag-per-replica?"
    )


def test_an_unknown_key_unlike_any_known_one_lists_the_known_keys() -> None:
    (problem,) = problems_of(zzz="1")
    assert "known keys: activation-entries, activation-lag, " in problem.allowed


def test_keys_of_other_prefixes_are_ignored() -> None:
    assert parse({P + "kafka-group": "g", "other.dev/lag-per-replica": "0", "app": "x"}) is not None


def test_allow_idle_consumers_conflicts_with_limit_to_partitions_with_lag() -> None:
    problems = problems_of(kafka_topics="t", allow_idle_consumers="true", limit_to_partitions_with_lag="true")
    assert problems == (
        AnnotationProblem(
            "allow-idle-consumers", "true", "cannot be true together with limit-to-partitions-with-lag=true"
        ),
    )


def test_limit_to_partitions_with_lag_conflicts_with_even_partition_distribution() -> None:
    problems = problems_of(
        kafka_topics="t", limit_to_partitions_with_lag="true", even_partition_distribution="true"
    )
    assert problems == (
        AnnotationProblem(
            "limit-to-partitions-with-lag",
            "true",
            "cannot be true together with even-partition-distribution=true",
        ),
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("limit-to-partitions-with-lag", "true"),
        ("even-partition-distribution", "true"),
        ("kafka-partitions", "0-3"),
    ],
)
def test_options_needing_one_topic_are_errors_without_kafka_topics(key: str, value: str) -> None:
    assert problems_of(**{key: value}) == (
        AnnotationProblem(key, value, "needs exactly one topic in kafka-topics, found none (all topics)"),
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("limit-to-partitions-with-lag", "true"),
        ("even-partition-distribution", "true"),
        ("kafka-partitions", "0-3"),
    ],
)
def test_options_needing_one_topic_are_errors_with_two_topics(key: str, value: str) -> None:
    assert problems_of(kafka_topics="a,b", **{key: value}) == (
        AnnotationProblem(key, value, "needs exactly one topic in kafka-topics, found 2 (a, b)"),
    )


def test_options_needing_one_topic_are_fine_when_false_or_with_one_topic() -> None:
    assert not policy(limit_to_partitions_with_lag="false").limit_to_partitions_with_lag
    assert policy(kafka_topics="t", even_partition_distribution="true").even_partition_distribution


def test_min_replicas_above_max_replicas_is_an_error() -> None:
    assert problems_of(min_replicas="5", max_replicas="3") == (
        AnnotationProblem("min-replicas", "5", "at most max-replicas (3)"),
    )


def test_min_replicas_above_the_default_max_replicas_names_the_default() -> None:
    assert problems_of(min_replicas="101") == (
        AnnotationProblem("min-replicas", "101", "at most max-replicas (100, the default)"),
    )


def test_a_conflict_is_not_reported_on_top_of_a_bad_value() -> None:
    problems = problems_of(min_replicas="5", max_replicas="x", kafka_topics="a/b", kafka_partitions="1")
    assert [p.key for p in problems] == ["kafka-topics", "max-replicas"]


def test_bad_values_unknown_keys_and_conflicts_are_all_reported_together() -> None:
    problems = problems_of(
        lag_per_replica="0", min_replicas="9", max_replicas="2", typo="x", kafka_partitions="1"
    )
    assert [p.key for p in problems] == ["lag-per-replica", "typo", "kafka-partitions", "min-replicas"]
    assert "lag-per-replica='0'" in str(PolicyError(problems))


def test_the_same_invalid_annotations_give_equal_hashable_problems() -> None:
    first = problems_of(lag_per_replica="0", paused="no")
    second = problems_of(paused="no", lag_per_replica="0")
    assert first == second
    assert hash(first) == hash(second)
    assert first != problems_of(lag_per_replica="0", paused="nope")


def test_last_active_is_read_as_rfc_3339_in_utc() -> None:
    parsed = policy(last_active="2026-11-26T13:30:00.25+01:30")
    assert parsed.last_active == datetime(2026, 11, 26, 12, 0, 0, 250000, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [
        "yesterday",
        "2026-11-26",
        "2026-11-26T12:00:00",
        "2026-02-30T12:00:00Z",
        "2026-11-26T12:00:00+25:00",
        "2026-11-26T12:00:00+01:60",
        "2026-11-26T24:00:00Z",
    ],
)
def test_a_malformed_last_active_is_ignored_rather_than_invalidating_the_target(value: str) -> None:
    assert policy(last_active=value).last_active is None


def test_policies_differing_only_in_last_active_compare_equal() -> None:
    first = policy(last_active="2026-11-26T12:00:00Z")
    second = policy()
    assert first == second
    assert hash(first) == hash(second)


def test_rfc_3339_times_format_and_parse_back() -> None:
    moment = datetime(2026, 11, 26, 12, 0, 1, 5, tzinfo=UTC)
    assert format_rfc3339(moment) == "2026-11-26T12:00:01.000005Z"
    assert parse_rfc3339(format_rfc3339(moment)) == moment
    assert format_rfc3339(moment.replace(microsecond=0)) == "2026-11-26T12:00:01Z"


def test_formatting_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        format_rfc3339(datetime(2026, 11, 26))


# --- the trigger annotation -------------------------------------------------------------------------------


def test_a_trigger_alone_makes_a_kafka_target_with_every_kafka_default() -> None:
    parsed = parse({P + "trigger": "billing-process-trigger"})
    assert parsed is not None
    assert parsed.trigger == "billing-process-trigger"
    assert parsed.kafka_group is None
    assert parsed.uses_kafka
    assert (parsed.lag_per_replica, parsed.activation_lag, parsed.kafka_connection) == (10, 0, "default")


def test_a_trigger_counts_partitions_its_dispatcher_has_not_committed_yet_as_empty() -> None:
    # The dispatcher starts a Trigger's group at the latest offset, so an uncommitted partition holds
    # nothing it will deliver; said explicitly, the KEDA default still applies.
    parsed = parse({P + "trigger": "billing"})
    assert parsed is not None
    assert parsed.scale_to_zero_on_invalid_offset
    explicit = parse({P + "trigger": "billing", P + "scale-to-zero-on-invalid-offset": "false"})
    assert explicit is not None
    assert not explicit.scale_to_zero_on_invalid_offset
    kafka_group = parse({P + "kafka-group": "g"})
    assert kafka_group is not None
    assert not kafka_group.scale_to_zero_on_invalid_offset


def test_a_trigger_takes_the_kafka_scaling_keys_and_the_partition_keys_without_kafka_topics() -> None:
    parsed = parse(
        {
            P + "trigger": "billing",
            P + "lag-per-replica": "5",
            P + "activation-lag": "3",
            P + "kafka-partitions": "0-1",
            P + "limit-to-partitions-with-lag": "true",
            P + "kafka-connection": "payments",
        }
    )
    assert parsed is not None
    assert (parsed.lag_per_replica, parsed.activation_lag) == (5, 3)
    assert parsed.kafka_partitions == frozenset({0, 1})
    assert parsed.kafka_connection == "payments"


@pytest.mark.parametrize(
    "name", ["Billing", "billing_trigger", "-billing", "billing-", "a" * 254, "", "a..b"]
)
def test_a_trigger_that_is_not_a_dns_name_is_a_problem_naming_the_value(name: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse({P + "trigger": name})
    (problem,) = caught.value.problems
    assert (problem.key, problem.value) == ("trigger", name)
    assert "DNS-1123" in problem.allowed


@pytest.mark.parametrize("other", ["kafka-group", "kafka-topics"])
def test_a_trigger_together_with_kafka_group_or_kafka_topics_is_a_problem(other: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse({P + "trigger": "billing", P + other: "orders"})
    (problem,) = caught.value.problems
    assert (problem.key, problem.value) == (other, "orders")
    assert "trigger (billing)" in problem.allowed
