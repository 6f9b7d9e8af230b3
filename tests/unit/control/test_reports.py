"""The report an activator sends the controller: what it carries, and the reports older activators send."""

from __future__ import annotations

import pytest

from autoscaler.model import ConcurrencyReport, TargetConcurrency, TargetKey

ORDERS = TargetKey("shop", "orders")


def test_a_report_carries_its_window_through_json() -> None:
    report = ConcurrencyReport("a1", {ORDERS: TargetConcurrency(1, 2, started=7, peak=4)}, cold=frozenset())
    assert ConcurrencyReport.from_json(report.to_json()) == report


def test_a_report_without_a_window_from_an_older_activator_is_accepted_as_no_requests_started() -> None:
    old = {"activator": "a1", "targets": {"shop/orders": {"in_flight": 1, "queued": 0}}, "cold": []}
    assert ConcurrencyReport.from_json(old).targets == {ORDERS: TargetConcurrency(1, 0, started=0, peak=0)}


@pytest.mark.parametrize(
    "counts",
    [
        {"in_flight": 1},
        {"in_flight": 1, "queued": 0, "started": -1},
        {"in_flight": 1, "queued": 0, "peak": True},
        {"in_flight": 2**63, "queued": 0},
    ],
)
def test_a_report_with_bad_counts_is_refused_naming_the_target(counts: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="shop/orders"):
        ConcurrencyReport.from_json({"activator": "a1", "targets": {"shop/orders": counts}})
