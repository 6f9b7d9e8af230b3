"""What a reader remembers of its cluster between reads: group coordinators and topic metadata.

Pure bookkeeping (times are passed in): the reader asks it what to request and stores the answers.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from autoscaler.errors import GroupError, KafkaError
from autoscaler.model import TopicPartition
from autoscaler.sources.kafka import broker_errors, protocol
from autoscaler.sources.kafka.broker_errors import TOPIC_MISSING, BrokerError

Layout = dict[str, tuple[int, ...]]
"""Topic -> the partitions to read."""
FetchSpec = dict[str, dict[str, list[int]] | None]
"""Group -> the partitions OffsetFetch asks for per topic, or None for every topic the group committed to."""


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """Cached metadata of one topic: leader per partition (-1: none), or why the topic cannot be read."""

    leaders: Mapping[int, int]
    problem: BrokerError | None
    fetched_at: float


@dataclass(frozen=True, slots=True)
class Unled:
    """Partitions that cannot be sent to a leader now: why, and whether trying again can help."""

    reasons: Mapping[TopicPartition, str]
    failed: frozenset[TopicPartition]


@dataclass
class ClusterCache:
    metadata_max_age: float
    missing_topic_recheck: float
    coordinators: dict[str, int] = field(default_factory=dict)
    topics: dict[str, TopicInfo] = field(default_factory=dict)
    group_seen: dict[str, float] = field(default_factory=dict)

    def clear(self) -> None:
        self.coordinators.clear()
        self.topics.clear()

    def fresh(self, topic: str, now: float) -> bool:
        info = self.topics.get(topic)
        if info is None or (info.problem is not None and info.problem.retriable):
            return False
        max_age = self.metadata_max_age if info.problem is None else self.missing_topic_recheck
        return now - info.fetched_at < max_age

    def stale(self, topics: Iterable[str], now: float) -> list[str]:
        return sorted(topic for topic in topics if not self.fresh(topic, now))

    def store_metadata(self, cluster: protocol.ClusterLayout, now: float) -> None:
        for layout in cluster.topics:
            if layout.error_code == TOPIC_MISSING.code:
                problem: BrokerError | None = TOPIC_MISSING
            else:
                problem = broker_errors.broker_error(layout.error_code) if layout.error_code else None
            leaders = dict(layout.leaders) if problem is None else {}
            self.topics[layout.topic] = TopicInfo(leaders=leaders, problem=problem, fetched_at=now)

    def forget(self, topic: str) -> None:
        self.topics.pop(topic, None)

    def forget_grown(self, committed: Iterable[Iterable[TopicPartition]]) -> None:
        """Drops topics with a committed partition the metadata does not know: they have grown."""
        for offsets in committed:
            for tp in offsets:
                info = self.topics.get(tp.topic)
                if info is not None and info.problem is None and tp.partition not in info.leaders:
                    del self.topics[tp.topic]

    def forget_unused(self, groups: Iterable[str], now: float) -> None:
        """Drops coordinators of groups not read for a while and topics not refreshed for a while."""
        for group in groups:
            self.group_seen[group] = now
        horizon = now - 2 * self.metadata_max_age
        for group in [g for g, seen in self.group_seen.items() if seen < horizon]:
            del self.group_seen[group]
            self.coordinators.pop(group, None)
        for topic in [t for t, info in self.topics.items() if info.fetched_at < horizon]:
            del self.topics[topic]

    def fetch_spec(self, wanted: Iterable[tuple[str, tuple[str, ...] | None]]) -> FetchSpec:
        """What OffsetFetch asks per (group, topics): known partitions of named topics, or None for all."""
        spec: FetchSpec = {}
        for group, named in wanted:
            if named is None:
                spec[group] = None
                continue
            topics = spec.setdefault(group, {})
            if topics is None:
                continue
            for topic in named:
                info = self.topics.get(topic)
                if info is not None and info.problem is None:
                    topics[topic] = sorted(info.leaders)
        return spec

    def layout(
        self, group: str, named: tuple[str, ...] | None, committed: Mapping[TopicPartition, int | None]
    ) -> Layout | KafkaError:
        """The partitions to read for a group: its named topics, or every topic it committed to."""
        topics = sorted(set(named) if named is not None else {tp.topic for tp in committed})
        layout: Layout = {}
        for topic in topics:
            info = self.topics.get(topic)
            if info is None:
                return GroupError(group, f"topic {topic!r}: no metadata", retriable=True)
            if info.problem is TOPIC_MISSING and named is None:
                continue  # offsets left behind by a deleted topic
            if info.problem is not None:
                sep = " " if info.problem is TOPIC_MISSING else ": "
                return GroupError(
                    group, f"topic {topic!r}{sep}{info.problem.name}", retriable=info.problem.retriable
                )
            layout[topic] = tuple(sorted(info.leaders))
        return layout

    def by_leader(
        self, partitions: Iterable[TopicPartition]
    ) -> tuple[dict[int, list[TopicPartition]], Unled]:
        """The partitions grouped by leader, and those without a usable leader (their metadata is dropped
        when a refresh may find one)."""
        led: dict[int, list[TopicPartition]] = collections.defaultdict(list)
        reasons: dict[TopicPartition, str] = {}
        failed: set[TopicPartition] = set()
        for tp in partitions:
            info = self.topics.get(tp.topic)
            if info is not None and info.problem is not None and not info.problem.retriable:
                reasons[tp] = f"topic {info.problem.name}"
                failed.add(tp)
                continue
            leader = None if info is None else info.leaders.get(tp.partition)
            if leader is None or leader < 0:
                reasons[tp] = "no leader known"
                self.topics.pop(tp.topic, None)
                continue
            led[leader].append(tp)
        return led, Unled(reasons, frozenset(failed))
