"""The lag command's table: Kafka's columns for comparison, and the lag the controller scales on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoscaler import cli
from autoscaler.cli import lag
from autoscaler.model import PartitionOffsets
from autoscaler.policy.annotations import OffsetResetPolicy

ROWS = [
    PartitionOffsets("orders", 1, committed=None, end=167, start=0),
    PartitionOffsets("audit", 0, committed=3, end=None),
    PartitionOffsets("orders", 0, committed=70, end=167, start=20),
    PartitionOffsets("orders", 2, committed=66, end=166, start=0),
]


def test_the_table_lists_partitions_sorted_with_kafkas_lag_and_the_controllers_lag_and_their_totals() -> None:
    assert lag.format_lag_table(ROWS) == "\n".join(
        [
            "TOPIC  PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG LOG-START-OFFSET CONTROLLER-LAG",
            "audit  0         3              -              -   -                0",
            "orders 0         70             167            97  20               97",
            "orders 1         -              167            -   0                1",
            "orders 2         66             166            100 0                100",
            "TOTAL                                          197                  198",
        ]
    )


def test_records_deleted_below_the_log_start_count_for_kafka_but_not_for_the_controller() -> None:
    # DeleteRecords moved the log start past the committed offset: Kafka says 70, the controller 40.
    row = PartitionOffsets("t", 0, committed=10, end=80, start=40)
    assert lag.tool_lag(row) == 70
    assert lag.controller_lag(row, OffsetResetPolicy.LATEST) == 40


def test_a_partition_without_a_commit_counts_by_the_reset_policy_for_the_controller() -> None:
    row = PartitionOffsets("t", 0, committed=None, end=50, start=30)
    assert lag.tool_lag(row) is None
    assert lag.controller_lag(row, OffsetResetPolicy.LATEST) == 1
    assert lag.controller_lag(row, OffsetResetPolicy.EARLIEST) == 20
    earliest = lag.format_lag_table([row], reset=OffsetResetPolicy.EARLIEST)
    assert earliest.splitlines()[-1].split() == ["TOTAL", "-", "20"]


def test_the_totals_are_zero_without_partitions() -> None:
    assert lag.format_lag_table([]).splitlines()[-1].split() == ["TOTAL", "0", "0"]


def test_the_json_document_carries_both_lags_and_both_totals() -> None:
    document = lag.lag_document("g", ROWS, OffsetResetPolicy.LATEST)
    assert document["total_lag"] == 197
    assert document["controller_total_lag"] == 198
    assert [p["controller_lag"] for p in document["partitions"]] == [0, 97, 1, 100]
    assert json.loads(json.dumps(document)) == document


def test_an_unknown_connection_name_is_a_clear_error_listing_the_known_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("kafka: {payments: {bootstrap: 'p:9096'}}")
    status = cli.main(["lag", "--connections", str(path), "--connection", "billing", "--group", "g"])
    assert status == 2
    assert (
        capsys.readouterr().err.strip()
        == "queue-autoscaler lag: no Kafka connection 'billing'; known: payments"
    )
