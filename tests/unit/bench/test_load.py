"""bench/load.py's pure parts: rate profiles, the CSV trace, the schedule, records and the progress line."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence

import pytest

from bench import load


def test_a_constant_profile_gives_its_rate_at_every_time() -> None:
    profile = load.constant(120)
    assert [profile(t) for t in (0, 0.5, 59.9, 3600)] == [120] * 4


def test_a_step_switches_rate_at_its_time() -> None:
    profile = load.step(10, 400, 30)
    assert profile(0) == 10
    assert profile(29.99) == 10
    assert profile(30) == 400
    assert profile(1000) == 400


def test_a_spike_holds_its_peak_for_its_width_only() -> None:
    profile = load.spike(5, 900, at=20, width=4)
    assert [profile(t) for t in (19.9, 20, 23.9, 24)] == [5, 900, 900, 5]


def test_a_sine_oscillates_around_its_mean_and_never_goes_negative() -> None:
    profile = load.sine(100, 50, period=60)
    assert profile(0) == pytest.approx(100)
    assert profile(15) == pytest.approx(150)
    assert profile(45) == pytest.approx(50)
    deep = load.sine(10, 40, period=4)
    assert min(deep(t / 10) for t in range(80)) == 0


def test_a_trace_interpolates_between_points_and_holds_its_ends() -> None:
    profile = load.trace([(10, 100), (20, 300), (20, 50), (30, 50)])
    assert profile(0) == 100  # before the first point: the first rate
    assert profile(15) == pytest.approx(200)
    assert profile(19.999) == pytest.approx(300, rel=1e-3)
    assert profile(20) == 50  # two points at 20 s make a step
    assert profile(100) == 50


def test_a_trace_file_skips_its_header_comments_and_blank_lines() -> None:
    text = "time_s,rate\n# warm-up\n0, 10\n\n5,200  # burst\n10,0\n"
    assert load.parse_trace(text) == [(0.0, 10.0), (5.0, 200.0), (10.0, 0.0)]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("0,10\n5\n", "line 2"),
        ("0,10\n5,abc\n", "line 2"),
        ("0,-1\n", "line 1"),
        ("time_s,rate\n", "no 'time_s,rate' lines"),
    ],
)
def test_a_bad_trace_file_names_its_first_bad_line(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        load.parse_trace(text)


def test_bad_profile_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="rate"):
        load.constant(-1)
    with pytest.raises(ValueError, match="width"):
        load.spike(1, 2, at=0, width=0)
    with pytest.raises(ValueError, match="period"):
        load.sine(1, 1, period=0)
    with pytest.raises(ValueError, match="decrease"):
        load.trace([(5, 1), (4, 1)])
    with pytest.raises(ValueError, match="finite"):
        load.constant(math.inf)


def test_the_schedule_integrates_the_rate_into_records_due() -> None:
    assert load.expected_records(load.constant(100), 2.0) == 200
    assert load.expected_records(load.step(0, 50, 10), 20) == 500
    assert load.expected_records(load.spike(0, 1000, at=1, width=2), 5) == 2000
    # A whole number of sine periods sends the mean rate times the duration.
    assert load.expected_records(load.sine(100, 80, period=10), 30) == pytest.approx(3000, abs=1)


def test_the_schedule_counts_up_as_time_passes_and_stops_at_max_records() -> None:
    schedule = load.Schedule(load.constant(10), max_records=25)
    due = [schedule.due(t) for t in (0, 0.5, 1.0, 2.0, 2.5, 10)]
    assert due == [0, 5, 10, 20, 25, 25]


def test_a_plain_record_is_json_padded_to_about_the_requested_size() -> None:
    value, headers = load.record(7, record_bytes=200, now=1_800_000_000.5)
    doc = json.loads(value)
    assert doc["seq"] == 7
    assert doc["sent_at"] == 1_800_000_000.5
    assert headers == []
    assert 190 <= len(value) <= 210


def test_a_binary_mode_cloudevent_carries_its_attributes_in_ce_headers() -> None:
    value, headers = load.record(
        3, mode="binary", ce_type="com.example.order", ce_source="/shop", now=0.0, event_id="e-3"
    )
    found = {name: raw.decode() for name, raw in headers}
    assert found == {
        "ce_specversion": "1.0",
        "ce_id": "e-3",
        "ce_source": "/shop",
        "ce_type": "com.example.order",
        "ce_time": "1970-01-01T00:00:00Z",
        "content-type": "application/json",
    }
    assert json.loads(value)["seq"] == 3  # the value is the data itself


def test_a_structured_mode_cloudevent_is_the_whole_event_as_json() -> None:
    value, headers = load.record(4, mode="structured", now=0.0, event_id="e-4")
    assert headers == [("content-type", b"application/cloudevents+json; charset=UTF-8")]
    event = json.loads(value)
    assert event["specversion"] == "1.0"
    assert event["id"] == "e-4"
    assert event["type"] == "dev.queue-autoscaler.bench.load"
    assert event["datacontenttype"] == "application/json"
    assert event["data"]["seq"] == 4


def test_the_progress_line_shows_the_bar_what_was_sent_and_how_far_behind() -> None:
    line = load.progress_line(load.Progress(15, 60, 1500, 1600, 100.0, 1_000_000), width=20)
    assert line.startswith("[#####...............]")
    assert "sent     1,500" in line
    assert "behind 100" in line
    assert "behind" not in load.progress_line(load.Progress(15, 60, 1600, 1600, 100.0, 1_000_000))


def test_the_reporter_writes_plain_lines_at_its_interval_when_not_on_a_terminal() -> None:
    out = io.StringIO()
    reporter = load.Reporter(out, every=5, tty=False)
    for tenth in range(121):
        reporter(load.Progress(tenth / 10, 12, tenth * 10, tenth * 10, 100.0, 1_000_000))
    reporter(load.Progress(12, 12, 1200, 1200, 100.0, 1_000_000), final=True)
    lines = out.getvalue().splitlines()
    assert len(lines) == 4  # at 0, 5 and 10 s, and the final line
    assert "\r" not in out.getvalue()


def test_the_reporter_redraws_one_line_on_a_terminal() -> None:
    out = io.StringIO()
    reporter = load.Reporter(out, tty=True)
    for tenth in range(11):
        reporter(load.Progress(tenth / 10, 1, tenth, tenth, 10.0, 1_000_000))
    reporter(load.Progress(1, 1, 10, 10, 10.0, 1_000_000), final=True)
    assert out.getvalue().count("\n") == 1
    assert out.getvalue().startswith("\r[")


def test_the_command_line_builds_each_profile() -> None:
    parser = load.build_parser()
    args = parser.parse_args(
        ["spike", "--base", "1", "--peak", "9", "--at", "2", "--width", "1", "--topic", "t"]
    )
    profile = load.profile_from_args(args)
    assert (profile(0), profile(2.5)) == (1, 9)
    assert args.duration == 60.0
    assert args.cloudevents == "none"
    with pytest.raises(SystemExit):
        parser.parse_args(["constant", "--rate", "-5", "--topic", "t"])


class CountingSink:
    """A sink that acknowledges all but the records numbered in ``refuse``."""

    def __init__(self, refuse: int = 0) -> None:
        self.batches: list[int] = []
        self.refuse = refuse

    async def send_batch(self, values: Sequence[bytes]) -> int:
        self.batches.append(len(values))
        refused = min(self.refuse, len(values))
        self.refuse -= refused
        return len(values) - refused

    async def close(self) -> None:
        return None


async def test_a_sink_gets_every_due_record_in_batches_and_refusals_count_as_failed() -> None:
    sink = CountingSink(refuse=3)

    result = await load.run_profile(
        load.step(0, 10_000, 0.0), topic="q", duration=0.1, max_records=50, sink=sink
    )

    assert (result.sent, result.delivered, result.failed) == (50, 47, 3)
    assert sum(sink.batches) == 50


async def test_a_sink_at_rate_zero_gets_nothing() -> None:
    sink = CountingSink()

    result = await load.run_profile(load.constant(0), topic="q", duration=0.1, sink=sink)

    assert (result.sent, sink.batches) == (0, [])


def test_the_command_line_takes_a_sink_and_its_url() -> None:
    args = load.build_parser().parse_args(
        ["constant", "--rate", "5", "--topic", "orders", "--sink", "redis", "--url", "redis://r:6379/0"]
    )

    assert (args.sink, args.url, args.topic) == ("redis", "redis://r:6379/0", "orders")
