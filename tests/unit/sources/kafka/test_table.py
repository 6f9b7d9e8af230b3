"""The lag table of the lag command, in the layout of Kafka's consumer-groups tool."""

from __future__ import annotations

from autoscaler.model import PartitionOffsets
from autoscaler.sources.kafka import table


def test_the_table_lists_partitions_sorted_with_dashes_for_unknown_values_and_a_total() -> None:
    rows = [
        PartitionOffsets("orders", 1, committed=None, end=167, start=0),
        PartitionOffsets("audit", 0, committed=3, end=None),
        PartitionOffsets("orders", 0, committed=70, end=167, start=20),
        PartitionOffsets("orders", 2, committed=66, end=166, start=0),
    ]

    assert table.format_lag_table(rows) == "\n".join(
        [
            "TOPIC  PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG LOG-START-OFFSET",
            "audit  0         3              -              -   -",
            "orders 0         70             167            97  20",
            "orders 1         -              167            -   0",
            "orders 2         66             166            100 0",
            "TOTAL                                          197",
        ]
    )


def test_lag_is_log_end_minus_committed_like_kafkas_tool_even_below_the_log_start() -> None:
    assert table.tool_lag(PartitionOffsets("t", 0, committed=10, end=50, start=30)) == 40
    assert table.tool_lag(PartitionOffsets("t", 0, committed=None, end=50)) is None


def test_the_total_is_zero_without_partitions_and_a_dash_when_no_lag_is_known() -> None:
    assert table.format_lag_table([]).splitlines()[-1].split() == ["TOTAL", "0"]
    unknown = [PartitionOffsets("t", 0, committed=None, end=5)]
    assert table.format_lag_table(unknown).splitlines()[-1].split() == ["TOTAL", "-"]
