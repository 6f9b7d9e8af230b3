"""Committed, log end and log start offsets of many consumer groups, in a few batched requests per read.

One read of N groups costs, on a warm cache, one OffsetFetch per group coordinator (every group in one
request, KIP-709) and two ListOffsets per partition leader (latest and earliest), whatever N is, over
PLAINTEXT, TLS or SASL alike. FindCoordinator (batched, KIP-699) is sent only for groups without a cached
coordinator, Metadata only for topics that are new, stale (``metadata_max_age``) or whose leader answered
with a leadership error (``cache.py`` keeps both). Errors reach the caller as ``autoscaler.errors`` types:
per group in the result, or raised when the cluster cannot be read at all. A broker that refuses the
connection's credentials or certificate is not asked again until they change or a back-off has passed.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

import structlog
from prometheus_client import CollectorRegistry

from autoscaler import connections
from autoscaler.errors import GroupError, KafkaError, KafkaUnavailable, PartitionError
from autoscaler.model import PartitionOffsets, TopicPartition
from autoscaler.observability.log_events import KafkaLog
from autoscaler.sources.kafka import broker_errors, link, protocol, retry
from autoscaler.sources.kafka.cache import ClusterCache, FetchSpec, Layout
from autoscaler.sources.kafka.retry import ReaderSettings as ReaderSettings

log = structlog.get_logger(__name__)

T = TypeVar("T")

GroupOffsets = tuple[PartitionOffsets, ...]


@dataclass(frozen=True, slots=True)
class GroupQuery:
    """A consumer group and the topics to read for it; None reads every topic it has committed offsets for."""

    group: str
    topics: tuple[str, ...] | None = None


ReadResult = dict[GroupQuery, GroupOffsets | KafkaError]
"""Each query's partitions, sorted by topic and partition, or the error that affected only that query."""


@dataclass(frozen=True, slots=True)
class _Committed:
    """OffsetFetch's outcome: committed offsets per group, and the groups that failed."""

    offsets: dict[str, dict[TopicPartition, int | None]]
    errors: dict[str, KafkaError]


@dataclass(frozen=True, slots=True)
class _Listed:
    """ListOffsets' outcome; a partition missing from ``ends`` failed (``reasons`` says why)."""

    ends: dict[TopicPartition, int]
    starts: dict[TopicPartition, int]
    reasons: dict[TopicPartition, str]


async def _gather(*aws: Awaitable[T]) -> list[T]:
    """Runs all at once; when one raises, the others are cancelled and awaited before it propagates."""
    futures = [asyncio.ensure_future(aw) for aw in aws]
    try:
        return list(await asyncio.gather(*futures))
    except BaseException:
        for future in futures:
            future.cancel()
        await asyncio.gather(*futures, return_exceptions=True)
        raise


def _as_connection(target: connections.KafkaConnection | str) -> connections.KafkaConnection:
    if isinstance(target, connections.KafkaConnection):
        return target
    return connections.KafkaConnection.model_validate({"name": target, "bootstrap": target})


class OffsetReader:
    """Reads consumer-group offsets over one Kafka connection (a bootstrap string is a PLAINTEXT one),
    caching coordinators and topic metadata between reads. ``requests_by_api`` counts every request
    attempted, by API name (``Metadata``, ``FindCoordinator``, ``OffsetFetch``, ``ListOffsets``); the same
    counts go to ``queue_autoscaler_kafka_requests_total`` on ``registry``. Connection handshakes
    (ApiVersions, SASL) and the client's own background metadata refresh are not counted.
    """

    def __init__(
        self,
        target: connections.KafkaConnection | str,
        *,
        settings: ReaderSettings | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.connection = _as_connection(target)
        self.bootstrap = self.connection.bootstrap_servers
        self.settings = settings if settings is not None else ReaderSettings()
        self._lock = asyncio.Lock()
        self._cache = ClusterCache(self.settings.metadata_max_age, self.settings.missing_topic_recheck)
        self._log = log.bind(connection=self.connection.name, bootstrap=self.bootstrap)
        self._link = link.Link(
            self.connection,
            settings=self.settings,
            registry=registry if registry is not None else CollectorRegistry(),
            on_reconnect=self._cache.clear,
            log=self._log,
        )

    @property
    def requests_by_api(self) -> collections.Counter[str]:
        return self._link.requests_by_api

    async def __aenter__(self) -> OffsetReader:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        async with self._lock:
            await self._link.close()

    async def read(self, *, queries: Sequence[GroupQuery]) -> ReadResult:
        """Offsets of every query's partitions, those without a committed offset included (committed None).

        Raises KafkaUnavailable when the cluster cannot be reached (bootstrap, Metadata or FindCoordinator
        fail after retries), KafkaError when the broker refuses the connection's credentials or certificate
        or is too old; anything narrower is that query's result.
        """
        wanted = tuple(dict.fromkeys(queries))
        if not wanted:
            return {}
        async with self._lock:
            deadline = retry.now() + self.settings.retry_budget
            await self._link.connect(deadline)
            self._cache.forget_unused({q.group for q in wanted}, retry.now())
            before = collections.Counter(self.requests_by_api)
            result = await self._read(wanted, deadline)
            self._log.debug(
                KafkaLog.OFFSETS_READ,
                queries=len(wanted),
                errors=sum(isinstance(r, KafkaError) for r in result.values()),
                requests=dict(self.requests_by_api - before),
            )
            return result

    async def _read(self, wanted: tuple[GroupQuery, ...], deadline: float) -> ReadResult:
        explicit = {topic for q in wanted if q.topics is not None for topic in q.topics}
        await self._ensure_metadata(explicit, deadline)
        fetched = await self._fetch_committed(
            self._cache.fetch_spec((q.group, q.topics) for q in wanted), deadline
        )
        committed = fetched.offsets
        discovered = {
            tp.topic for q in wanted if q.topics is None and q.group in committed for tp in committed[q.group]
        }
        self._cache.forget_grown(offsets.keys() for offsets in committed.values())
        await self._ensure_metadata(explicit | discovered, deadline)

        layouts: dict[GroupQuery, Layout | KafkaError] = {
            q: fetched.errors[q.group]
            if q.group in fetched.errors
            else self._cache.layout(q.group, q.topics, committed[q.group])
            for q in wanted
        }
        partitions = {
            TopicPartition(topic, partition)
            for layout in layouts.values()
            if not isinstance(layout, KafkaError)
            for topic, parts in layout.items()
            for partition in parts
        }
        listed = await self._list_offsets(partitions, deadline)
        return {
            q: layout if isinstance(layout, KafkaError) else _rows(q, layout, committed[q.group], listed)
            for q, layout in layouts.items()
        }

    async def _fetch_committed(self, spec: FetchSpec, deadline: float) -> _Committed:
        committed: dict[str, dict[TopicPartition, int | None]] = {
            g: {} for g, topics in spec.items() if topics == {}
        }
        errors: dict[str, KafkaError] = {}
        reasons: dict[str, str] = {}
        pending = {g for g in spec if g not in committed}

        def settle(group: str, outcome: dict[TopicPartition, int | None] | KafkaError | str) -> None:
            if isinstance(outcome, str):
                reasons[group] = outcome  # retriable: try again within the budget
                return
            pending.discard(group)
            if isinstance(outcome, KafkaError):
                errors[group] = outcome
            else:
                committed[group] = outcome

        async def attempt() -> bool:
            unlocated = sorted(g for g in pending if g not in self._cache.coordinators)
            if unlocated:
                for group, outcome in (await self._locate(unlocated)).items():
                    if group in pending and outcome is not None:
                        settle(group, outcome)
            by_node: dict[int, list[str]] = collections.defaultdict(list)
            for group in sorted(pending):
                if group in self._cache.coordinators:
                    by_node[self._cache.coordinators[group]].append(group)
            jobs = list(by_node.items())
            replies = await _gather(
                *(self._offset_fetch(node, {g: spec[g] for g in groups}) for node, groups in jobs)
            )
            for (_node, groups), reply in zip(jobs, replies, strict=True):
                if isinstance(reply, KafkaUnavailable):
                    for group in groups:
                        settle(group, str(reply))
                        self._cache.coordinators.pop(group, None)
                    continue
                answered = {entry.group: entry for entry in reply}
                for group in groups:
                    entry = answered.get(group)
                    settle(
                        group,
                        "missing from the OffsetFetch answer" if entry is None else self._committed(entry),
                    )
            return not pending

        await self._until_settled(attempt, deadline)
        for group in pending:
            errors[group] = KafkaUnavailable(f"group {group!r}: {reasons.get(group, 'coordinator unknown')}")
        return _Committed(committed, errors)

    def _committed(
        self, entry: protocol.GroupCommitted
    ) -> dict[TopicPartition, int | None] | KafkaError | str:
        """One group's OffsetFetch answer: its offsets, its error, or a retriable reason."""
        problem, where = None, ""
        if entry.error_code == broker_errors.GROUP_ID_NOT_FOUND:
            pass  # a group that never committed: no offsets, like an unknown group on older brokers
        elif entry.error_code:
            problem = broker_errors.broker_error(entry.error_code)
            if problem.coordinator_moved:
                self._cache.coordinators.pop(entry.group, None)
        else:
            for item in entry.partitions:
                if item.error_code:
                    problem = broker_errors.broker_error(item.error_code)
                    where = f"topic {item.topic!r} partition {item.partition}: "
                    break
        if problem is None:
            return {TopicPartition(i.topic, i.partition): i.offset for i in entry.partitions}
        if problem.retriable:
            return f"OffsetFetch: {where}{problem.name}"
        return GroupError(entry.group, f"{where}{problem.name}")

    async def _locate(self, groups: Sequence[str]) -> dict[str, KafkaError | str | None]:
        """One FindCoordinator for all these groups: None (located), a retriable reason, or the group's
        error. A transport failure means the cluster is unreachable and raises."""
        reply = await self._link.send(
            self._link.any_node(), protocol.FindCoordinatorRequest(groups), api="FindCoordinator"
        )
        found = protocol.decode_find_coordinator(reply)
        self._link.learn_brokers(
            (protocol.Broker(c.node_id, c.host, c.port, None) for c in found if not c.error_code),
            complete=False,
        )
        outcomes: dict[str, KafkaError | str | None] = {}
        for c in found:
            if not c.error_code:
                self._cache.coordinators[c.group] = c.node_id
                outcomes[c.group] = None
                continue
            problem = broker_errors.broker_error(c.error_code)
            reason = f"FindCoordinator: {problem.name}"
            outcomes[c.group] = reason if problem.retriable else GroupError(c.group, reason)
        return outcomes

    async def _offset_fetch(
        self, node: int, groups: Mapping[str, Mapping[str, Sequence[int]] | None]
    ) -> tuple[protocol.GroupCommitted, ...] | KafkaUnavailable:
        try:
            reply = await self._link.send(node, protocol.OffsetFetchRequest(groups), api="OffsetFetch")
        except KafkaUnavailable as exc:
            return exc
        return protocol.decode_offset_fetch(reply)

    async def _list_offsets(self, partitions: Collection[TopicPartition], deadline: float) -> _Listed:
        """Log end and log start offsets of every partition."""
        listed = _Listed({}, {}, {})
        failed: set[TopicPartition] = set()
        isolation = protocol.READ_COMMITTED if self.settings.read_committed else protocol.READ_UNCOMMITTED

        def todo() -> dict[int, list[TopicPartition]]:
            return {
                protocol.LATEST: sorted(
                    tp for tp in partitions if tp not in listed.ends and tp not in failed
                ),
                protocol.EARLIEST: sorted(
                    tp for tp in partitions if tp not in listed.starts and tp not in failed
                ),
            }

        async def attempt() -> bool:
            wanted = todo()
            await self._refresh_metadata({tp.topic for tps in wanted.values() for tp in tps})
            jobs: list[tuple[int, int, list[TopicPartition]]] = []
            for timestamp, tps in wanted.items():
                by_leader, unled = self._cache.by_leader(tps)
                listed.reasons.update(unled.reasons)
                failed.update(unled.failed)
                jobs.extend((timestamp, leader, group) for leader, group in by_leader.items())
            replies = await _gather(
                *(self._list_node(leader, led, ts, isolation) for ts, leader, led in jobs)
            )
            for (timestamp, _leader, led), reply in zip(jobs, replies, strict=True):
                found = listed.ends if timestamp == protocol.LATEST else listed.starts
                if isinstance(reply, KafkaUnavailable):
                    for tp in led:
                        listed.reasons[tp] = str(reply)
                        self._cache.forget(tp.topic)
                    continue
                answered = set()
                for item in reply:
                    tp = TopicPartition(item.topic, item.partition)
                    answered.add(tp)
                    if not item.error_code:
                        found[tp] = item.offset
                        continue
                    problem = broker_errors.broker_error(item.error_code)
                    listed.reasons[tp] = f"ListOffsets: {problem.name}"
                    if problem.stale_metadata:
                        self._cache.forget(tp.topic)
                    if not problem.retriable:
                        failed.add(tp)
                for tp in set(led) - answered:
                    listed.reasons[tp] = "missing from the ListOffsets answer"
            return not any(todo().values())

        if partitions:
            await self._until_settled(attempt, deadline)
        return listed

    async def _list_node(
        self, node: int, partitions: Sequence[TopicPartition], timestamp: int, isolation: int
    ) -> tuple[protocol.ListedOffset, ...] | KafkaUnavailable:
        by_topic: dict[str, list[int]] = collections.defaultdict(list)
        for tp in partitions:
            by_topic[tp.topic].append(tp.partition)
        request = protocol.ListOffsetsRequest(by_topic, timestamp=timestamp, isolation_level=isolation)
        try:
            reply = await self._link.send(node, request, api="ListOffsets")
        except KafkaUnavailable as exc:
            return exc
        return protocol.decode_list_offsets(reply)

    async def _ensure_metadata(self, topics: Collection[str], deadline: float) -> None:
        if topics:
            await self._until_settled(lambda: self._refresh_metadata(topics), deadline)

    async def _refresh_metadata(self, topics: Collection[str]) -> bool:
        """One Metadata request for the topics not fresh in the cache; True when none is left to retry."""
        stale = self._cache.stale(topics, retry.now())
        if not stale:
            return True
        reply = await self._link.send(self._link.any_node(), protocol.metadata_request(stale), api="Metadata")
        cluster = protocol.decode_metadata(reply)
        self._link.learn_brokers(cluster.brokers, complete=True)
        now = retry.now()
        self._cache.store_metadata(cluster, now)
        self._log.debug(KafkaLog.METADATA_REFRESHED, topics=stale)
        return not self._cache.stale(stale, now)

    async def _until_settled(self, attempt: Callable[[], Awaitable[bool]], deadline: float) -> None:
        await retry.until_settled(attempt, deadline, settings=self.settings, log=self._log)


def _rows(
    q: GroupQuery, layout: Layout, committed: Mapping[TopicPartition, int | None], listed: _Listed
) -> GroupOffsets | KafkaError:
    """A query's partitions, or the first partition whose end offset could not be read."""
    rows: list[PartitionOffsets] = []
    for topic, parts in layout.items():
        for partition in parts:
            tp = TopicPartition(topic, partition)
            end = listed.ends.get(tp)
            if end is None:
                reason = listed.reasons.get(tp, "no log end offset")
                return PartitionError(f"group {q.group!r}: topic {topic!r} partition {partition}: {reason}")
            rows.append(PartitionOffsets(topic, partition, committed.get(tp), end, listed.starts.get(tp)))
    return tuple(rows)


async def describe_lag(
    *,
    target: connections.KafkaConnection | str,
    group: str,
    topics: tuple[str, ...] | None = None,
    settings: ReaderSettings | None = None,
) -> GroupOffsets:
    """Offsets of one group (its topics, or every topic it committed to), for ``queue-autoscaler lag``."""
    query = GroupQuery(group, topics or None)
    async with OffsetReader(target, settings=settings) as reader:
        outcome = (await reader.read(queries=[query]))[query]
    if isinstance(outcome, KafkaError):
        raise outcome
    return outcome
