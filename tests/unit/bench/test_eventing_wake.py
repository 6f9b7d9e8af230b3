from __future__ import annotations

from typing import Any

import pytest

from bench import eventing_wake


def test_a_round_is_split_into_its_parts_from_the_send_time() -> None:
    row = eventing_wake.split(sent=10.0, answered=10.02, patched=10.1, ready_at=11.5, delivered=12.0)

    assert row == {
        "accept_ms": 20.0,
        "patch_ms": 100.0,
        "listening_ms": 1500.0,
        "delivery_ms": 2000.0,
        "added_ms": 500.0,
    }


def test_a_round_through_the_activator_alone_has_no_accept_time() -> None:
    row = eventing_wake.split(sent=10.0, answered=None, patched=10.1, ready_at=11.5, delivered=12.0)

    assert "accept_ms" not in row


def test_clock_readings_out_of_order_are_refused_rather_than_reported() -> None:
    with pytest.raises(ValueError, match="out of order"):
        eventing_wake.split(sent=10.0, answered=None, patched=12.5, ready_at=11.5, delivered=12.0)


def rows() -> list[dict[str, Any]]:
    made = []
    for number, delivery in enumerate((3000.0, 2000.0, 4000.0), start=1):
        made.append(
            {"round": 2 * number - 1, "mode": "broker", "pod": "p", "accept_ms": 20.0}
            | {
                "patch_ms": 100.0,
                "listening_ms": 1500.0,
                "delivery_ms": delivery,
                "added_ms": delivery - 1500,
            }
        )
        made.append(
            {"round": 2 * number, "mode": "activator", "pod": "p"}
            | {
                "patch_ms": 50.0,
                "listening_ms": 1400.0,
                "delivery_ms": delivery - 500,
                "added_ms": delivery - 1900,
            }
        )
    return made


def test_each_path_gets_the_median_p90_and_max_of_each_part_and_the_broker_share_is_their_difference() -> (
    None
):
    result = eventing_wake.result_of(rows(), 3)

    assert result["summary"]["broker"]["delivery_ms"] == {"median": 3000.0, "p90": 4000.0, "max": 4000.0}
    assert result["summary"]["activator"]["delivery_ms"]["median"] == 2500.0
    assert "accept_ms" not in result["summary"]["activator"]
    assert result["broker_share_ms"] == 500.0


def test_the_markdown_has_a_row_per_part_and_per_round() -> None:
    text = eventing_wake.markdown(eventing_wake.result_of(rows(), 3))

    assert "| POST -> first delivery at the worker | 3000 | 4000 | 4000 | 2500 | 3500 | 3500 |" in text
    assert "| POST -> 202 (stored in Kafka, acks=all) | 20 | 20 | 20 | - | - | - |" in text
    assert "| 4 | activator | - | 50 | 1400 | 1500 | 100 |" in text
    assert "broker minus activator alone): 500 ms." in text
