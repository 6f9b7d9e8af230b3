"""Lag of one partition and of a target, per the rules in DESIGN.md."""

from __future__ import annotations

import pytest

from autoscaler.model import PartitionOffsets, TopicPartition
from autoscaler.policy import lag
from autoscaler.policy.annotations import OffsetResetPolicy
from tests.unit.policy.builders import lagging, policy


def lag_of(
    committed: int | None,
    end: int | None,
    start: int | None = None,
    *,
    reset: OffsetResetPolicy = OffsetResetPolicy.LATEST,
    invalid_is_zero: bool = False,
) -> int:
    return lag.partition_lag(
        PartitionOffsets("t", 0, committed=committed, end=end, start=start),
        offset_reset_policy=reset,
        scale_to_zero_on_invalid_offset=invalid_is_zero,
    )


def test_lag_is_end_minus_committed() -> None:
    assert lag_of(120, 150, 0) == 30


def test_records_deleted_by_retention_below_the_log_start_are_not_counted() -> None:
    assert lag_of(100, 150, start=130) == 20


def test_a_committed_offset_past_the_end_counts_zero_not_negative() -> None:
    assert lag_of(200, 150) == 0


def test_no_committed_offset_with_latest_counts_one() -> None:
    assert lag_of(None, 150, 0) == 1


def test_no_committed_offset_with_latest_counts_zero_with_scale_to_zero_on_invalid_offset() -> None:
    assert lag_of(None, 150, 0, invalid_is_zero=True) == 0


def test_no_committed_offset_with_earliest_counts_end_minus_log_start() -> None:
    # KEDA counts the end offset E here, including records retention already deleted; we count E − S.
    assert lag_of(None, 1000, start=900, reset=OffsetResetPolicy.EARLIEST) == 100


def test_no_committed_offset_with_earliest_and_no_log_start_read_counts_the_end() -> None:
    assert lag_of(None, 1000, reset=OffsetResetPolicy.EARLIEST) == 1000


def test_no_committed_offset_with_earliest_counts_zero_with_scale_to_zero_on_invalid_offset() -> None:
    assert lag_of(None, 1000, start=900, reset=OffsetResetPolicy.EARLIEST, invalid_is_zero=True) == 0


@pytest.mark.parametrize("committed", [None, 0, 120])
def test_a_partition_absent_from_the_end_offsets_counts_zero(committed: int | None) -> None:
    assert lag_of(committed, None, 0) == 0
    assert lag_of(committed, None, 0, reset=OffsetResetPolicy.EARLIEST) == 0


def test_a_negative_committed_offset_counts_as_no_committed_offset() -> None:
    assert lag_of(-1, 150, 0) == 1


def test_target_lag_sums_partitions_and_counts_those_with_lag() -> None:
    result = lag.compute(policy(), lagging(5, 0, 7), {})
    assert (result.sizing_lag, result.activation_lag) == (12, 12)
    assert (result.partition_count, result.partitions_with_lag) == (3, 2)
    assert [p.lag for p in result.partitions] == [5, 0, 7]


def test_kafka_topics_limit_the_partitions_considered() -> None:
    offsets = lagging(5, 5, topic="orders") + lagging(100, topic="audit")
    result = lag.compute(policy(kafka_topics="orders"), offsets, {})
    assert (result.activation_lag, result.partition_count) == (10, 2)


def test_without_kafka_topics_every_topic_given_counts() -> None:
    offsets = lagging(5, 5, topic="orders") + lagging(100, topic="audit")
    result = lag.compute(policy(), offsets, {})
    assert (result.activation_lag, result.partition_count) == (110, 3)


def test_kafka_partitions_limit_the_partitions_considered() -> None:
    result = lag.compute(policy(kafka_topics="t", kafka_partitions="0-1,3"), lagging(1, 2, 40, 8), {})
    assert (result.activation_lag, result.partition_count) == (11, 3)
    assert [p.partition for p in result.partitions] == [0, 1, 3]


def test_a_partition_absent_from_end_offsets_still_counts_toward_the_partition_count() -> None:
    offsets = (*lagging(10), PartitionOffsets("t", 1, committed=5, end=None))
    result = lag.compute(policy(), offsets, {})
    assert (result.activation_lag, result.partition_count, result.partitions_with_lag) == (10, 2, 1)


def test_persistent_lag_counts_for_activation_but_not_for_sizing() -> None:
    previous = {TopicPartition("t", 0): 100, TopicPartition("t", 1): 90}
    result = lag.compute(policy(exclude_persistent_lag="true"), lagging(30, 20), previous)
    # Partition 0 did not move since the last read; partition 1 did.
    assert [(p.lag, p.sizing_lag) for p in result.partitions] == [(30, 0), (20, 20)]
    assert (result.sizing_lag, result.activation_lag, result.persistent_lag) == (20, 50, 30)
    assert result.partitions_with_lag == 1


def test_persistent_lag_is_counted_on_the_first_read() -> None:
    result = lag.compute(policy(exclude_persistent_lag="true"), lagging(30), {})
    assert result.sizing_lag == 30


def test_an_unmoved_offset_counts_for_sizing_without_exclude_persistent_lag() -> None:
    result = lag.compute(policy(), lagging(30), {TopicPartition("t", 0): 100})
    assert result.sizing_lag == 30


def test_a_partition_without_committed_offset_is_never_persistent() -> None:
    offsets = (PartitionOffsets("t", 0, committed=None, end=50, start=0),)
    result = lag.compute(policy(exclude_persistent_lag="true"), offsets, {TopicPartition("t", 0): 0})
    assert result.sizing_lag == 1
