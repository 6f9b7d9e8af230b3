"""The `queue-autoscaler decide` JSON contract and the state it passes back."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from autoscaler.errors import PolicyError
from autoscaler.model import TopicPartition
from autoscaler.policy.decide import DecisionState
from autoscaler.policy.document import DocumentError, decide_document, load, state_from_json, state_to_json
from tests.unit.policy.builders import NOW, P


def partitions(*lags: int) -> list[dict[str, object]]:
    return [
        {"topic": "t", "partition": i, "committed": 100, "end": 100 + lag, "start": 0}
        for i, lag in enumerate(lags)
    ]


def document(**fields: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "annotations": {P + "kafka-group": "g", P + "lag-per-replica": "10"},
        "current_replicas": 3,
        "partitions": partitions(30, 0, 0, 0),
        "now": "2026-11-26T12:00:00Z",
    }
    doc.update(fields)
    return doc


def test_answers_the_documented_example() -> None:
    answer = decide_document(document(), NOW)
    assert answer["desired_replicas"] == 3
    assert answer["total_lag"] == 30
    assert answer["active"] is True
    assert answer["rule"] == "hold"
    assert "lag 30 across 4 partitions at lag-per-replica 10" in str(answer["reason"])
    assert json.loads(json.dumps(answer)) == answer


def test_the_state_round_trips_through_successive_calls() -> None:
    doc = document(current_replicas=1, partitions=partitions(80, 80, 80, 80))
    answers = []
    steps = [
        ("2026-11-26T12:00:00Z", [80, 80, 80, 80]),
        ("2026-11-26T12:00:30Z", [0, 0, 0, 0]),
        ("2026-11-26T12:01:01Z", [0, 0, 0, 0]),
        ("2026-11-26T12:05:29Z", [0, 0, 0, 0]),
        ("2026-11-26T12:05:30Z", [0, 0, 0, 0]),
    ]
    for now, lags in steps:
        doc.update(now=now, partitions=partitions(*lags))
        answer = json.loads(json.dumps(decide_document(doc, NOW)))
        answers.append((answer["desired_replicas"], answer["rule"]))
        doc.update(state=answer["state"], current_replicas=answer["desired_replicas"])
    assert answers == [
        (4, "scale-up"),
        (4, "hold"),
        (1, "scale-down-window"),
        (1, "hold"),
        (0, "scale-to-zero"),
    ]


def test_annotation_keys_may_omit_the_prefix() -> None:
    doc = document(annotations={"kafka-group": "g", "lag-per-replica": "5", P + "max-replicas": "2"})
    assert decide_document(doc, NOW)["desired_replicas"] == 2


def test_now_in_the_document_wins_over_the_clock_given() -> None:
    answer = decide_document(document(), NOW + timedelta(days=1))
    assert answer["state"] == {
        "idle_since": None,
        "history": [["2026-11-26T12:00:00Z", 3]],
        "committed": [],
    }
    without_now = document()
    del without_now["now"]
    answer = decide_document(without_now, NOW + timedelta(days=1))
    assert answer["state"] == {
        "idle_since": None,
        "history": [["2026-11-27T12:00:00Z", 3]],
        "committed": [],
    }


def test_last_active_seeds_the_idle_timer_without_state() -> None:
    doc = document(partitions=partitions(0, 0))
    doc["annotations"] = {"kafka-group": "g", "last-active": "2026-11-26T11:50:00Z"}
    answer = decide_document(doc, NOW)
    assert (answer["desired_replicas"], answer["rule"]) == (0, "scale-to-zero")


def test_null_partitions_mean_the_lag_could_not_be_read() -> None:
    answer = decide_document(document(partitions=None, kafka_error="broker down"), NOW)
    assert (answer["desired_replicas"], answer["rule"], answer["total_lag"]) == (3, "hold-unreadable", 0)
    assert "lag unreadable (broker down)" in str(answer["reason"])


def test_committed_and_end_may_be_null_and_start_may_be_left_out() -> None:
    entries = [
        {"topic": "t", "partition": 0, "committed": None, "end": 10},
        {"topic": "t", "partition": 1, "committed": 5, "end": None},
    ]
    answer = decide_document(document(current_replicas=0, partitions=entries), NOW)
    assert (answer["total_lag"], answer["desired_replicas"]) == (1, 1)


def test_concurrency_drives_an_http_target() -> None:
    doc = document(annotations={"http-service": "web"}, current_replicas=0, partitions=None, concurrency=15)
    assert decide_document(doc, NOW)["desired_replicas"] == 2


def test_invalid_annotations_raise_policy_error_listing_every_key() -> None:
    doc = document(annotations={"kafka-group": "g", "lag-per-replica": "0", "paused": "yes"})
    with pytest.raises(PolicyError) as caught:
        decide_document(doc, NOW)
    assert [str(p) for p in caught.value.problems] == [
        "lag-per-replica='0': an integer > 0",
        "paused='yes': true or false",
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"current_replicas": None}, "current_replicas must be an integer >= 0"),
        ({"current_replicas": -1}, "current_replicas must be an integer >= 0"),
        ({"current_replicas": True}, "current_replicas must be an integer >= 0"),
        ({"annotations": ["kafka-group"]}, "annotations: required"),
        ({"annotations": {"kafka-group": 5}}, r"annotations\['kafka-group'\] must be a string"),
        ({"annotations": {"app": "x"}}, "not a queue-autoscaler target"),
        ({"partitions": {"topic": "t"}}, "partitions must be a list"),
        ({"partitions": ["t/0"]}, r"partitions\[0\] must be an object"),
        (
            {"partitions": [{"topic": "t", "partition": 0, "committed": 1}]},
            r"partitions\[0\].end is required",
        ),
        ({"partitions": [{"topic": "", "partition": 0, "committed": 1, "end": 2}]}, r"partitions\[0\].topic"),
        (
            {"partitions": [{"topic": "t", "partition": 0, "committed": -1, "end": 2}]},
            r"partitions\[0\].committed must be an integer >= 0 or null",
        ),
        (
            {"partitions": [{"topic": "t", "partition": 0, "committed": 1, "end": "9"}]},
            r"partitions\[0\].end must be an integer >= 0 or null",
        ),
        ({"partitions": partitions(1) + partitions(2)}, r"partitions\[1\]: t/0 appears twice"),
        ({"now": "tomorrow"}, "now: 'tomorrow' is not an RFC 3339 time"),
        ({"concurrency": "lots"}, "concurrency must be an integer >= 0"),
        ({"kafka_error": 5}, "kafka_error must be a string"),
        ({"state": []}, "state must be an object"),
        (
            {"state": {"history": [["2026-11-26T12:00:00Z"]]}},
            r"state.history\[0\] must be a \[time, replicas\]",
        ),
        ({"state": {"idle_since": "noon"}}, "state.idle_since"),
        ({"state": {"committed": [{"topic": "t", "partition": 0}]}}, r"state.committed\[0\].offset"),
    ],
)
def test_a_malformed_document_raises_a_value_error_naming_the_field(
    change: dict[str, object], message: str
) -> None:
    with pytest.raises(DocumentError, match=message):
        decide_document(document(**change), NOW)


def test_a_missing_current_replicas_is_reported() -> None:
    doc = document()
    del doc["current_replicas"]
    with pytest.raises(ValueError, match="current_replicas: required"):
        decide_document(doc, NOW)


def test_decision_state_round_trips_through_json() -> None:
    state = DecisionState(
        idle_since=datetime.fromisoformat("2026-11-26T11:59:00.5+00:00"),
        history=((NOW, 4), (NOW + timedelta(seconds=1), 2)),
        committed=((TopicPartition("a", 0), 10), (TopicPartition("b", 3), 7)),
    )
    as_json = state_to_json(state)
    assert as_json == {
        "idle_since": "2026-11-26T11:59:00.500000Z",
        "history": [["2026-11-26T12:00:00Z", 4], ["2026-11-26T12:00:01Z", 2]],
        "committed": [
            {"topic": "a", "partition": 0, "offset": 10},
            {"topic": "b", "partition": 3, "offset": 7},
        ],
    }
    assert state_from_json(json.loads(json.dumps(as_json))) == state


def test_an_empty_state_object_is_the_initial_state() -> None:
    assert state_from_json({}) == DecisionState.initial(None)


def test_a_kafka_target_without_partitions_is_an_error_and_null_says_unreadable() -> None:
    doc = document()
    del doc["partitions"]
    with pytest.raises(DocumentError, match="partitions: required for a Kafka target"):
        decide_document(doc, NOW)
    answer = decide_document(document(partitions=None), NOW)
    assert (answer["rule"], answer["desired_replicas"]) == ("hold-unreadable", 3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"current_replica": 3},
            r"document: unknown key 'current_replica'; did you mean 'current_replicas'\?",
        ),
        ({"partitions": [{"topic": "t", "partition": 0, "committed": 1, "end": 2, "strat": 0}]}, "'start'"),
        (
            {"state": {"idle_since": None, "histroy": []}},
            r"state: unknown key 'histroy'; did you mean 'history'",
        ),
        ({"zzz": 1}, "unknown key 'zzz'; allowed: annotations, "),
    ],
)
def test_unknown_keys_are_refused_with_the_closest_known_one(change: dict[str, object], message: str) -> None:
    with pytest.raises(DocumentError, match=message):
        decide_document(document(**change), NOW)


@pytest.mark.parametrize("field", ["current_replicas", "concurrency", "requests_started"])
def test_integers_beyond_int64_are_refused(field: str) -> None:
    assert isinstance(decide_document(document(**{field: 2**63 - 1}), NOW)["desired_replicas"], int)
    with pytest.raises(DocumentError, match=f"{field} must be an integer >= 0 and <= 9223372036854775807"):
        decide_document(document(**{field: 2**63}), NOW)


def test_json_nested_too_deeply_is_a_document_error_not_a_crash() -> None:
    with pytest.raises(DocumentError, match="nested too deeply"):
        load("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DocumentError, match="not JSON"):
        load("{")


def test_a_trigger_target_is_decided_on_the_partitions_given_like_a_kafka_group_target() -> None:
    annotations = {P + "trigger": "billing", P + "lag-per-replica": "10"}
    answer = decide_document(document(annotations=annotations, current_replicas=0), NOW)
    assert (answer["desired_replicas"], answer["total_lag"], answer["source"]) == (3, 30, "kafka")
    with pytest.raises(DocumentError, match="partitions: required for a Kafka target"):
        decide_document({"annotations": annotations, "current_replicas": 0}, NOW)
