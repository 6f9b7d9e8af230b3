from __future__ import annotations

from typing import Any

from bench import demo_eventing
from bench.demo_eventing import BILLING, Posting

OTHER = "com.shivamitcs.shipping.started"

T = "billing-process-trigger"
METRICS = f"""\
# HELP queue_autoscaler_trigger_events Records a Trigger finished, by result.
# TYPE queue_autoscaler_trigger_events counter
queue_autoscaler_trigger_events_total{{namespace="billing",result="delivered",trigger="{T}"}} 4.0
queue_autoscaler_trigger_events_total{{namespace="billing",result="filtered",trigger="{T}"}} 8.0
queue_autoscaler_trigger_events_total{{namespace="other",result="delivered",trigger="{T}"}} 99.0
queue_autoscaler_trigger_events_total{{namespace="billing",result="delivered",trigger="another"}} 7.0
queue_autoscaler_trigger_events_created{{namespace="billing",result="delivered",trigger="{T}"}} 1.7e9
"""


def posting(events: dict[str, tuple[str, float, int]], began: float, ended: float) -> Posting:
    found = Posting(began=began, ended=ended)
    for event_id, (event_type, sent, status) in events.items():
        found.sent[event_id] = (event_type, sent)
        found.statuses[event_id] = status
    return found


def delivery(event_id: str, event_type: str, at: float, time: str, pod: str = "p1") -> dict[str, Any]:
    return {"id": event_id, "type": event_type, "time": time, "at": at, "pod": pod}


def test_the_types_of_the_posted_events_take_turns_starting_with_billing() -> None:
    assert list(demo_eventing.event_types(4)) == [*demo_eventing.EVENT_TYPES, BILLING]


def test_the_dispatcher_results_are_those_of_the_demo_trigger_in_the_demo_namespace_only() -> None:
    assert demo_eventing.dispatcher_results(METRICS, namespace="billing") == {"delivered": 4, "filtered": 8}


def test_the_flow_summary_counts_deliveries_by_type_and_measures_from_the_time_attribute() -> None:
    sent = posting(
        {
            "a": (BILLING, 100.0, 202),
            "b": (OTHER, 100.5, 202),
            "c": (BILLING, 101.0, 202),
            "d": (BILLING, 101.5, 503),
        },
        began=100.0,
        ended=102.0,
    )
    record = [
        delivery("a", BILLING, 104.0, "1970-01-01T00:01:40Z"),
        delivery("c", BILLING, 104.5, "1970-01-01T00:01:41.000000Z", pod="p2"),
        delivery("a", BILLING, 105.0, "1970-01-01T00:01:40Z"),
    ]

    summary = demo_eventing.summarize_flow(sent, record, {"delivered": 3, "filtered": 1})

    assert summary.posted == {BILLING: 3, OTHER: 1}
    assert (summary.accepted, summary.statuses) == (3, {202: 3, 503: 1})
    assert summary.events_per_s_in == 1.5
    assert summary.received == {BILLING: 3}
    assert (summary.missing, summary.duplicates, summary.unexpected) == (0, 1, 0)
    assert (summary.latency_p50_ms, summary.latency_p99_ms) == (4000.0, 4000.0)
    assert summary.first_delivery_ms == 4000.0
    assert summary.pods == 2


def test_a_filtered_type_delivered_or_a_billing_event_never_delivered_is_reported() -> None:
    sent = posting({"a": (BILLING, 10.0, 202), "b": (OTHER, 10.0, 202)}, began=10.0, ended=11.0)

    summary = demo_eventing.summarize_flow(sent, [delivery("b", OTHER, 12.0, "1970-01-01T00:00:10Z")], {})

    assert (summary.missing, summary.unexpected) == (1, 1)
    assert summary.latency_p50_ms is None
    assert summary.first_delivery_ms is None


def test_the_flow_table_names_every_figure_of_the_summary() -> None:
    sent = posting({"a": (BILLING, 10.0, 202)}, began=10.0, ended=11.0)
    summary = demo_eventing.summarize_flow(
        sent, [delivery("a", BILLING, 10.25, "1970-01-01T00:00:10Z")], {"delivered": 1}
    )

    table = "\n".join(demo_eventing.flow_rows(summary))

    assert "| events/s in (accepted / posting time) | 1.0 |" in table
    assert "| dispatcher: delivered / filtered out / dead-lettered | 1 / 0 / 0 |" in table
    assert "p50 / p99 | 250 ms / 250 ms |" in table
    assert demo_eventing.flow_json(summary)["received_by_type"] == {BILLING: 1}


def test_the_live_line_shows_what_the_worker_received_by_short_type() -> None:
    sent = posting({"a": (BILLING, 10.0, 202), "b": (OTHER, 10.0, 0)}, began=10.0, ended=11.0)

    line = demo_eventing.live_line(sent, [delivery("a", BILLING, 10.5, "")])

    assert line == "  broker: 2 posted, 1 accepted; worker received: billing.started 1"
