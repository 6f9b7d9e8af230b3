from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bench import demo_report, watch

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def sample(second: float, replicas: int, lag: int) -> watch.Sample:
    return watch.Sample(second, T0 + timedelta(seconds=second), replicas, replicas, lag)


SAMPLES = [sample(0, 0, 0), sample(1, 0, 40), sample(2, 2, 30), sample(3, 2, 0), sample(4, 0, 0)]
EVENTS = [
    watch.ScaleEvent(T0 + timedelta(seconds=1.5), "ActivatedFromZero", "0 -> 2 replicas (activate): lag 40"),
    watch.ScaleEvent(T0 + timedelta(seconds=3.5), "ScaledToZero", "2 -> 0 replicas"),
]


def test_the_reaction_counts_from_the_first_sample_with_a_backlog_and_back_to_zero_from_its_last() -> None:
    summary = demo_report.summarize(SAMPLES, EVENTS)

    assert summary.reaction_ms == 500.0
    assert (summary.peak_lag, summary.replica_seconds, summary.back_to_zero_s) == (40, 4.0, 1.5)
    assert summary.woken_by == "0 -> 2 replicas (activate): lag 40"


def test_given_when_the_first_work_was_sent_the_reaction_counts_from_then_and_says_so() -> None:
    summary = demo_report.summarize(SAMPLES, EVENTS, work_began=(T0 + timedelta(seconds=0.5)).timestamp())
    rows = "\n".join(demo_report.summary_rows(summary, "worker", "backlog"))

    assert summary.reaction_ms == 1000.0
    assert "| reaction: first event posted → ActivatedFromZero | 1000 ms |" in rows
    assert demo_report.summary_json(summary)["reaction_from"] == "first event posted"


def test_a_deployment_never_woken_has_no_reaction_and_says_so() -> None:
    summary = demo_report.summarize(SAMPLES[:1], [])

    assert (summary.reaction_ms, summary.back_to_zero_s, summary.woken_by) == (None, None, "-")
