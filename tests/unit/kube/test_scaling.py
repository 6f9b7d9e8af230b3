"""Times written to the API: RFC 3339 in UTC with a Z."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from autoscaler.kube import scaling


def test_whole_seconds_are_written_without_a_fraction_and_in_utc() -> None:
    when = datetime(2026, 11, 26, 13, 0, 0, tzinfo=timezone(timedelta(hours=1)))
    assert scaling.format_time(when) == "2026-11-26T12:00:00Z"


def test_microseconds_are_kept_and_micro_forces_them() -> None:
    assert (
        scaling.format_time(datetime(2026, 11, 26, 12, 0, 0, 5, tzinfo=UTC)) == "2026-11-26T12:00:00.000005Z"
    )
    assert (
        scaling.format_time(datetime(2026, 11, 26, 12, tzinfo=UTC), micro=True)
        == "2026-11-26T12:00:00.000000Z"
    )


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        scaling.format_time(datetime(2026, 11, 26, 12))
