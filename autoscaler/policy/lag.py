"""Partition offsets -> lag, by the rules of DESIGN.md "Lag of one partition"."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from autoscaler.model import PartitionOffsets, TopicPartition
from autoscaler.policy.annotations import OffsetResetPolicy, ScalingPolicy


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """One partition's lag: ``lag`` counts toward activation, ``sizing_lag`` toward the replica count.

    They differ only when exclude-persistent-lag zeroes a partition whose committed offset did not move.
    """

    topic: str
    partition: int
    committed: int | None
    lag: int
    sizing_lag: int

    @property
    def topic_partition(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


@dataclass(frozen=True, slots=True)
class LagResult:
    """Lag over the partitions a policy considers (after kafka-topics and kafka-partitions filtering)."""

    sizing_lag: int
    activation_lag: int
    partition_count: int
    partitions_with_lag: int
    partitions: tuple[PartitionLag, ...]

    @property
    def persistent_lag(self) -> int:
        return self.activation_lag - self.sizing_lag


def partition_lag(
    offsets: PartitionOffsets,
    *,
    offset_reset_policy: OffsetResetPolicy,
    scale_to_zero_on_invalid_offset: bool,
) -> int:
    """Lag of one partition; never negative. A negative committed offset counts as no committed offset."""
    end = offsets.end
    if end is None:
        return 0
    start = 0 if offsets.start is None else offsets.start
    committed = offsets.committed
    if committed is None or committed < 0:
        if scale_to_zero_on_invalid_offset:
            return 0
        if offset_reset_policy is OffsetResetPolicy.LATEST:
            return 1
        # Records already deleted by retention (below the log start) cannot be consumed: not counted.
        return max(0, end - start)
    return max(0, end - max(committed, start))


def considered(policy: ScalingPolicy, partitions: Iterable[PartitionOffsets]) -> list[PartitionOffsets]:
    """The partitions a policy scales on: its kafka-topics (all when unset) and kafka-partitions."""
    topics = set(policy.kafka_topics)
    chosen = policy.kafka_partitions
    return [
        p
        for p in partitions
        if (not topics or p.topic in topics) and (chosen is None or p.partition in chosen)
    ]


def compute(
    policy: ScalingPolicy,
    partitions: Iterable[PartitionOffsets],
    previous_committed: Mapping[TopicPartition, int],
) -> LagResult:
    """Lag of one target, one entry per partition in ``partitions``.

    ``previous_committed`` holds the committed offsets of the previous read; it is only used with
    exclude-persistent-lag.
    """
    lags = []
    for offsets in considered(policy, partitions):
        lag = partition_lag(
            offsets,
            offset_reset_policy=policy.offset_reset_policy,
            scale_to_zero_on_invalid_offset=policy.scale_to_zero_on_invalid_offset,
        )
        sizing = lag
        if (
            policy.exclude_persistent_lag
            and offsets.committed is not None
            and previous_committed.get(offsets.topic_partition) == offsets.committed
        ):
            sizing = 0
        lags.append(PartitionLag(offsets.topic, offsets.partition, offsets.committed, lag, sizing))
    return LagResult(
        sizing_lag=sum(p.sizing_lag for p in lags),
        activation_lag=sum(p.lag for p in lags),
        partition_count=len(lags),
        partitions_with_lag=sum(1 for p in lags if p.sizing_lag > 0),
        partitions=tuple(lags),
    )
