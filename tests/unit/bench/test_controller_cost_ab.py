"""The side-by-side controller cost summary: medians per side and current / baseline ratios."""

from __future__ import annotations

from bench import controller_cost_ab


def report(cpu: float, rss: float) -> dict[str, float]:
    return {
        "cpu_ms_per_tick": cpu,
        "rss_mib": rss,
        "tick_duration_mean_ms": cpu,
        "kafka_requests_per_tick": 3,
    }


def test_medians_of_each_side_and_their_ratios() -> None:
    runs = {
        "baseline": [report(200, 150), report(240, 148), report(220, 160)],
        "current": [report(100, 140), report(130, 150), report(110, 139)],
    }

    summary = controller_cost_ab.summary(runs)

    assert summary["medians"]["baseline"]["cpu_ms_per_tick"] == 220
    assert summary["medians"]["current"]["rss_mib"] == 140
    assert summary["ratios_current_over_baseline"]["cpu_ms_per_tick"] == 0.5
    assert summary["ratios_current_over_baseline"]["kafka_requests_per_tick"] == 1.0
