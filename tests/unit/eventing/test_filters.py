"""Trigger parsing and the filter the dispatcher and ``queue-autoscaler match`` run."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from autoscaler import errors
from autoscaler.eventing import delivery, filters
from devstack.eventing_harness import ISSUE_TRIGGER


def trigger(**spec: Any) -> filters.Trigger:
    base: dict[str, Any] = {"broker": "b", "subscriber": {"uri": "http://sink.example/"}}
    base.update(spec)
    return filters.parse_trigger({"metadata": {"name": "t", "namespace": "ns"}, "spec": base})


def problems_of(doc: object) -> list[str]:
    with pytest.raises(errors.TriggerError) as caught:
        filters.parse_trigger(doc)
    return [str(p) for p in caught.value.problems]


EVENT = {
    "specversion": "1.0",
    "id": "1",
    "source": "/s",
    "type": "com.example.billing.started",
    "tenant": "a",
}


# --- parsing ----------------------------------------------------------------------------------------------


def test_the_issue_trigger_parses_with_its_broker_filter_subscriber_and_knative_kafka_defaults() -> None:
    parsed = filters.parse_trigger(ISSUE_TRIGGER)
    assert parsed.broker == "default-event-broker"
    assert parsed.attributes == (("type", "com.shivamitcs.billing.started"),)
    assert parsed.subscriber.ref == delivery.Ref(
        "serving.knative.dev/v1", "Service", "billing-worker-service", "serverless-apps"
    )
    assert parsed.consumer_group == "knative-trigger-serverless-apps-billing-process-trigger"
    assert parsed.delivery == delivery.Delivery(retry=0, backoff_policy="exponential", backoff_delay=0.2)
    assert parsed.ordered is False


def test_an_invalid_trigger_lists_every_problem_at_once() -> None:
    found = problems_of(
        {
            "metadata": {"name": "t", "annotations": {filters.DELIVERY_ORDER_ANNOTATION: "random"}},
            "spec": {
                "filter": {"attributes": {"Type": "x", "ok": 3}},
                "filters": [
                    {"exact": {"type": "a"}, "prefix": {"type": "b"}},
                    {"exact": {}},
                    {"cesqll": "x"},
                ],
                "delivery": {"retry": -1, "backoffPolicy": "fibonacci", "backoffDelay": "200ms"},
            },
        }
    )
    assert found == [
        "metadata.annotations[kafka.eventing.knative.dev/delivery.order]: 'random': ordered or unordered",
        "spec.broker: required: the name of a Broker in the Trigger's namespace",
        "spec.filter.attributes['Type']: attribute names are lowercase letters and digits, from a letter",
        "spec.filter.attributes['ok']: 3: the value must be a string ('' = present with any value)",
        "spec.filters[0]: multiple dialects found (exact, prefix): one per filters entry",
        "spec.filters[1].exact: must hold exactly one attribute name and value",
        "spec.filters[2]: unknown dialect 'cesqll': one of exact, prefix, suffix, all, any, not, cesql",
        "spec.subscriber: required: a ref (apiVersion, kind, name) and/or a uri",
        "spec.delivery.retry: -1: an integer >= 0",
        "spec.delivery.backoffPolicy: 'fibonacci': linear or exponential",
        "spec.delivery.backoffDelay: '200ms' is not an ISO 8601 duration such as PT0.2S, PT30S or PT1M",
    ]


def test_a_subscriber_uri_must_be_absolute_alone_and_relative_with_a_ref() -> None:
    alone = problems_of({"metadata": {"name": "t"}, "spec": {"broker": "b", "subscriber": {"uri": "/path"}}})
    both = problems_of(
        {
            "metadata": {"name": "t"},
            "spec": {
                "broker": "b",
                "subscriber": {
                    "ref": {"apiVersion": "v1", "kind": "Service", "name": "s"},
                    "uri": "http://x/",
                },
            },
        }
    )
    assert alone == ["spec.subscriber.uri: '/path': without a ref the uri must be an absolute http(s) URL"]
    assert both == ["spec.subscriber.uri: 'http://x/': with a ref the uri must be relative (a path)"]


def test_a_cross_namespace_broker_ref_is_refused_with_what_to_use_instead() -> None:
    found = problems_of(
        {"metadata": {"name": "t"}, "spec": {"brokerRef": {"name": "b"}, "subscriber": {"uri": "http://x/"}}}
    )
    assert "spec.brokerRef: not supported: name a Broker of the same namespace in spec.broker" in found


def test_delivery_durations_are_iso_8601_and_every_field_is_read() -> None:
    parsed = trigger(
        delivery={
            "retry": 3,
            "backoffPolicy": "linear",
            "backoffDelay": "PT0.5S",
            "timeout": "PT1M30S",
            "deadLetterSink": {"uri": "http://dls.example/"},
        }
    )
    assert parsed.delivery == delivery.Delivery(
        retry=3,
        backoff_policy="linear",
        backoff_delay=0.5,
        timeout=90.0,
        dead_letter_sink=delivery.Destination(None, "http://dls.example/"),
    )


@pytest.mark.parametrize(
    ("text", "seconds"), [("PT0.2S", 0.2), ("PT1H", 3600.0), ("P1DT1S", 86401.0), ("PT2M", 120.0)]
)
def test_iso_8601_durations_convert_to_seconds(text: str, seconds: float) -> None:
    assert delivery.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["P", "PT", "1S", "PT1", "P1DT", "-PT1S"])
def test_malformed_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not an ISO 8601 duration"):
        delivery.parse_duration(text)


# --- filter.attributes ------------------------------------------------------------------------------------


def test_filter_attributes_are_an_and_of_exact_case_sensitive_comparisons_over_extensions_too() -> None:
    both = trigger(filter={"attributes": {"type": "com.example.billing.started", "tenant": "a"}})
    assert filters.match(both, filters.event_attributes(EVENT)) == filters.Match(
        True, "filter.attributes matched: tenant='a', type='com.example.billing.started'"
    )
    other_tenant = filters.event_attributes({**EVENT, "tenant": "A"})
    assert filters.match(both, other_tenant) == filters.Match(
        False, "filter.attributes: tenant is 'A', the Trigger wants 'a'"
    )


def test_an_empty_attribute_value_needs_the_attribute_present_with_any_value() -> None:
    present = trigger(filter={"attributes": {"tenant": ""}})
    assert filters.matches(present, filters.event_attributes(EVENT))
    assert filters.matches(present, filters.event_attributes({**EVENT, "tenant": ""}))
    without = {k: v for k, v in EVENT.items() if k != "tenant"}
    assert filters.match(present, filters.event_attributes(without)) == filters.Match(
        False, "filter.attributes: the event has no attribute 'tenant'"
    )


def test_a_trigger_without_any_filter_takes_every_event() -> None:
    assert filters.match(trigger(), {"type": "x"}) == filters.Match(
        True, "the Trigger has no filter: every event matches"
    )
    assert filters.matches(trigger(filters=[]), {"type": "x"})


# --- filters (Subscriptions API) --------------------------------------------------------------------------


def test_each_dialect_decides_and_names_itself_in_the_reason() -> None:
    attributes = filters.event_attributes(EVENT)
    cases: list[tuple[dict[str, Any], bool]] = [
        ({"exact": {"type": "com.example.billing.started"}}, True),
        ({"exact": {"type": "com.example.Billing.started"}}, False),
        ({"prefix": {"type": "com.example."}}, True),
        ({"suffix": {"type": ".started"}}, True),
        ({"suffix": {"type": ".Started"}}, False),
        ({"prefix": {"missing": "x"}}, False),
        ({"all": [{"prefix": {"type": "com."}}, {"exact": {"tenant": "a"}}]}, True),
        ({"all": [{"prefix": {"type": "com."}}, {"exact": {"tenant": "b"}}]}, False),
        ({"any": [{"exact": {"tenant": "b"}}, {"exact": {"tenant": "a"}}]}, True),
        ({"any": [{"exact": {"tenant": "b"}}]}, False),
        ({"not": {"exact": {"tenant": "b"}}}, True),
        ({"not": {"exact": {"tenant": "a"}}}, False),
    ]
    verdicts = [(filters.match(trigger(filters=[f]), attributes), expected) for f, expected in cases]
    assert [v.matches for v, _ in verdicts] == [expected for _, expected in verdicts]
    reasons = [v.reason for v, _ in verdicts]
    assert [
        r.startswith(f"filters[0]: {next(iter(f))}") for r, (f, _) in zip(reasons, cases, strict=True)
    ] == [True] * len(cases)
    assert reasons[2] == "filters[0]: prefix: type 'com.example.billing.started' starts with 'com.example.'"
    assert reasons[11] == "filters[0]: not: (exact: tenant 'a' is 'a')"


def test_the_reason_says_which_dialect_and_attribute_refused() -> None:
    verdict = filters.match(
        trigger(filters=[{"prefix": {"type": "com."}}, {"all": [{"exact": {"tenant": "b"}}]}]),
        filters.event_attributes(EVENT),
    )
    assert verdict == filters.Match(False, "filters[1]: all[0]: exact: tenant 'a' is not 'b'")


def test_filters_win_over_filter_attributes_when_both_are_set() -> None:
    both = trigger(
        filter={"attributes": {"type": "something.else"}}, filters=[{"prefix": {"type": "com.example"}}]
    )
    assert filters.matches(both, filters.event_attributes(EVENT))


def test_a_cesql_filter_parses_but_makes_the_trigger_not_ready_and_matches_nothing() -> None:
    parsed = trigger(filters=[{"any": [{"cesql": "type = 'x'"}]}])
    assert parsed.unsupported is not None
    assert "cesql" in parsed.unsupported
    verdict = filters.match(parsed, {"type": "x"})
    assert verdict.matches is False
    assert verdict.reason.startswith("the Trigger is not Ready: the cesql filter dialect is not supported")


def test_exact_prefix_and_suffix_with_an_empty_value_are_refused_not_silently_skipped() -> None:
    found = problems_of(
        {
            "metadata": {"name": "t"},
            "spec": {
                "broker": "b",
                "subscriber": {"uri": "http://x/"},
                "filters": [{"prefix": {"type": ""}}],
            },
        }
    )
    assert found == ["spec.filters[0].prefix['type']: the value must be a non-empty string"]


def test_event_attributes_are_the_canonical_strings_without_the_data() -> None:
    found = filters.event_attributes({**EVENT, "data": {"x": 1}, "count": 3, "flag": True})
    assert found == {**{k: str(v) for k, v in EVENT.items()}, "count": "3", "flag": "true"}


# --- queue-autoscaler match -------------------------------------------------------------------------------


def run_match(document: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "autoscaler.cli", "match"],
        input=json.dumps(document),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_match_prints_the_verdict_and_the_reason_for_the_issue_trigger() -> None:
    billing = {**EVENT, "type": "com.shivamitcs.billing.started"}
    done = run_match({"trigger": ISSUE_TRIGGER, "event": billing})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "matches": True,
        "reason": "filter.attributes matched: type='com.shivamitcs.billing.started'",
    }
    other = run_match({"trigger": ISSUE_TRIGGER, "event": EVENT})
    assert json.loads(other.stdout)["matches"] is False


def test_match_exits_2_listing_every_problem_of_an_invalid_trigger() -> None:
    done = run_match({"trigger": {"metadata": {"name": "t"}, "spec": {}}, "event": EVENT})
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "match: invalid Trigger:",
        "  spec.broker: required: the name of a Broker in the Trigger's namespace",
        "  spec.subscriber: required: a ref (apiVersion, kind, name) and/or a uri",
    ]
