"""bench/watch.py's pure parts: the lag query from annotations, CSV round trips and the PNG."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench import watch

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def write_csv(path: Path, rows: list[tuple[float, int | None, int | None, int | None]]) -> None:
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=watch.CSV_FIELDS)
        writer.writeheader()
        for time_s, spec, ready, lag in rows:
            writer.writerow(
                watch.format_row(watch.Sample(time_s, T0 + timedelta(seconds=time_s), spec, ready, lag))
            )


def test_the_lag_query_comes_from_the_annotations_and_flags_override_them() -> None:
    notes = {
        "queue-autoscaler.dev/kafka-group": "billing",
        "queue-autoscaler.dev/kafka-topics": "invoices",
        "queue-autoscaler.dev/offset-reset-policy": "earliest",
    }
    found = watch.lag_query(notes, group=None, topics=())
    assert found is not None
    query, policy = found
    assert (query.group, query.topics) == ("billing", ("invoices",))
    assert policy.offset_reset_policy.value == "earliest"

    overridden = watch.lag_query(notes, group="other", topics=["a", "b"])
    assert overridden is not None
    assert (overridden[0].group, overridden[0].topics) == ("other", ("a", "b"))
    assert watch.lag_query({}, group=None, topics=()) is None
    assert watch.lag_query({}, group="g", topics=()) is not None


def test_invalid_annotations_still_give_the_group_to_watch() -> None:
    notes = {"queue-autoscaler.dev/kafka-group": "g", "queue-autoscaler.dev/lag-per-replica": "zero"}
    found = watch.lag_query(notes, group=None, topics=())
    assert found is not None
    assert found[0].group == "g"


def test_samples_and_events_survive_a_csv_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "run.csv"
    write_csv(path, [(0.0, 0, 0, None), (0.25, 3, 1, 420)])
    samples = watch.read_samples(path)
    assert [(s.time_s, s.spec_replicas, s.ready_replicas, s.lag) for s in samples] == [
        (0.0, 0, 0, None),
        (0.25, 3, 1, 420),
    ]
    assert samples[1].wall_time == T0 + timedelta(seconds=0.25)

    events = [watch.ScaleEvent(T0, "ActivatedFromZero", "0 -> 3, lag 420"), watch.ScaleEvent(T0, "ScaledUp")]
    watch.write_events(watch.events_path(path), events)
    assert watch.events_path(path).name == "run.events.csv"
    assert watch.read_events(watch.events_path(path)) == events


def test_render_draws_a_png_from_a_small_generated_csv(tmp_path: Path) -> None:
    rows: list[tuple[float, int | None, int | None, int | None]] = []
    for i in range(240):  # 60 s at 250 ms: lag ramps up, replicas follow, then drain to zero
        t = i / 4
        lag = int(max(0.0, 400 - abs(t - 25) * 20))
        spec = 0 if t < 10 else 4 if t < 40 else 1 if t < 50 else 0
        ready = 0 if t < 12 else spec
        rows.append((t, spec, ready, None if 30 <= t < 31 else lag))  # one second without a lag reading
    path = tmp_path / "run.csv"
    write_csv(path, rows)
    events = [
        watch.ScaleEvent(T0 + timedelta(seconds=10), "ActivatedFromZero"),
        watch.ScaleEvent(T0 + timedelta(seconds=40), "ScaledDown"),
        watch.ScaleEvent(T0 + timedelta(seconds=50), "ScaledToZero"),
        watch.ScaleEvent(T0 - timedelta(seconds=30), "ScaledUp"),  # before the samples: not drawn
    ]
    png = watch.render(path, tmp_path / "plots" / "run.png", events, title="generated")
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1100, 550)


def test_the_render_command_finds_the_events_file_next_to_the_csv(tmp_path: Path) -> None:
    path = tmp_path / "run.csv"
    write_csv(path, [(0.0, 0, 0, 0), (1.0, 2, 0, 300), (2.0, 2, 2, 100)])
    watch.write_events(
        watch.events_path(path), [watch.ScaleEvent(T0 + timedelta(seconds=1), "ActivatedFromZero")]
    )
    assert watch.main(["render", "--csv", str(path)]) == 0
    assert (tmp_path / "run.png").stat().st_size > 1000
