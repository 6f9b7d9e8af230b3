"""Committed, log end and log start offsets of many consumer groups, in a few batched requests per read.

One read of N groups costs, on a warm cache, one OffsetFetch per group coordinator (every group in one
request, KIP-709) and two ListOffsets per partition leader (latest and earliest), whatever N is.
FindCoordinator (batched, KIP-699) is sent only for groups without a cached coordinator, Metadata only for
topics that are new, stale (``metadata_max_age``) or whose leader answered with a leadership error.
Errors reach the caller as ``autoscaler.errors`` types: per group in the result, or raised when the
cluster cannot be reached at all.
"""

from __future__ import annotations

import asyncio
import collections
import weakref
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import structlog
import tenacity
from aiokafka import errors as aiokafka_errors
from aiokafka.client import AIOKafkaClient
from prometheus_client import CollectorRegistry, Counter
from tenacity.stop import stop_base

from autoscaler.errors import GroupError, KafkaError, KafkaUnavailable, PartitionError
from autoscaler.model import PartitionOffsets, TopicPartition
from autoscaler.sources.kafka import protocol

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
class ReaderSettings:
    """Tunables of an OffsetReader; times in seconds.

    ``retry_budget`` bounds the retrying of one read: no retry starts later than this after the read began
    (about half the default 1 s tick). ``missing_topic_recheck`` is how long "topic does not exist" is
    believed before asking again.
    """

    request_timeout: float = 2.0
    retry_budget: float = 0.5
    retry_attempts: int = 3
    retry_backoff: float = 0.05
    metadata_max_age: float = 60.0
    missing_topic_recheck: float = 5.0
    read_committed: bool = False
    client_id: str = "queue-autoscaler"


_REQUEST_COUNTERS: weakref.WeakKeyDictionary[CollectorRegistry, Counter] = weakref.WeakKeyDictionary()


def _requests_counter(registry: CollectorRegistry) -> Counter:
    """One counter per registry, shared by every reader that reports to it."""
    counter = _REQUEST_COUNTERS.get(registry)
    if counter is None:
        counter = Counter(
            "queue_autoscaler_kafka_requests_total",
            "Requests sent to Kafka brokers by the offset reader, by API.",
            ["api"],
            registry=registry,
        )
        _REQUEST_COUNTERS[registry] = counter
    return counter


@dataclass(frozen=True, slots=True)
class _BrokerError:
    code: int
    name: str
    retriable: bool
    stale_metadata: bool

    @property
    def coordinator_moved(self) -> bool:
        return self.code in (15, 16)  # COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR


# Codes newer than aiokafka's table: (name, retriable, metadata is stale).
_NEWER_CODES: dict[int, tuple[str, bool, bool]] = {
    6: ("NOT_LEADER_OR_FOLLOWER", True, True),
    74: ("FENCED_LEADER_EPOCH", True, True),
    75: ("UNKNOWN_LEADER_EPOCH", True, True),
    78: ("OFFSET_NOT_AVAILABLE", True, True),
    88: ("UNSTABLE_OFFSET_COMMIT", True, False),
    100: ("UNKNOWN_TOPIC_ID", True, True),
}

_TOPIC_MISSING = _BrokerError(3, "does not exist", retriable=False, stale_metadata=False)
_GROUP_ID_NOT_FOUND = 69


def _broker_error(code: int) -> _BrokerError:
    if code in _NEWER_CODES:
        name, retriable, stale = _NEWER_CODES[code]
        return _BrokerError(code, name, retriable, stale)
    kind = aiokafka_errors.for_code(code)
    if kind is aiokafka_errors.UnknownError:
        return _BrokerError(code, f"error code {code}", retriable=False, stale_metadata=False)
    return _BrokerError(code, str(kind.message), bool(kind.retriable), bool(kind.invalid_metadata))


def _translate(exc: BaseException, what: str) -> KafkaError:
    """aiokafka, socket and timeout errors -> the errors.py tree; the one place this happens."""
    if isinstance(exc, aiokafka_errors.IncompatibleBrokerVersion | NotImplementedError):
        return KafkaError(f"{what}: the broker lacks the API version needed (Kafka >= 3.0): {exc}")
    unreachable = (aiokafka_errors.KafkaTimeoutError, aiokafka_errors.KafkaUnavailableError)
    if isinstance(exc, aiokafka_errors.KafkaError) and not (exc.retriable or isinstance(exc, unreachable)):
        return KafkaError(f"{what}: {exc!r}")
    return KafkaUnavailable(f"{what}: {exc!r}")


_TRANSLATED = (aiokafka_errors.KafkaError, NotImplementedError, OSError, TimeoutError)


class _Unsettled(Exception):
    """Some groups or partitions still have a retriable error: try again within the budget."""


class _StopAt(stop_base):
    """Stops before a retry whose backoff would end past the read's deadline."""

    def __init__(self, deadline: float, clock: Callable[[], float]) -> None:
        self._deadline = deadline
        self._clock = clock

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self._clock() + retry_state.upcoming_sleep >= self._deadline


def _retriable(exc: BaseException) -> bool:
    return isinstance(exc, _Unsettled) or (isinstance(exc, KafkaError) and exc.retriable)


@dataclass(frozen=True, slots=True)
class _TopicInfo:
    """Cached metadata of one topic: leader per partition (-1: none), or why the topic cannot be read."""

    leaders: Mapping[int, int]
    problem: _BrokerError | None
    fetched_at: float


Layout = dict[str, tuple[int, ...]]


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


class OffsetReader:
    """Reads consumer-group offsets from one Kafka cluster (one bootstrap address), caching coordinators and
    topic metadata between reads. ``requests_by_api`` counts every request attempted, by API name
    (``Metadata``, ``FindCoordinator``, ``OffsetFetch``, ``ListOffsets``); the same counts go to
    ``queue_autoscaler_kafka_requests_total`` on ``registry``. Connection handshakes (ApiVersions) and the
    client's own background metadata refresh after a broken connection are not counted.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        settings: ReaderSettings | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.settings = settings if settings is not None else ReaderSettings()
        self.requests_by_api: collections.Counter[str] = collections.Counter()
        self._metric = _requests_counter(registry if registry is not None else CollectorRegistry())
        self._client: Any = None
        self._closed = False
        self._lock = asyncio.Lock()
        self._coordinators: dict[str, int] = {}
        self._group_seen: dict[str, float] = {}
        self._topics: dict[str, _TopicInfo] = {}
        self._log = log.bind(bootstrap=bootstrap)

    async def __aenter__(self) -> OffsetReader:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            client, self._client = self._client, None
            self._coordinators.clear()
            self._topics.clear()
            if client is not None:
                await client.close()

    async def read(self, *, queries: Sequence[GroupQuery]) -> ReadResult:
        """Offsets of every query's partitions, those without a committed offset included (committed None).

        Raises KafkaUnavailable when the cluster cannot be reached (bootstrap, Metadata or FindCoordinator
        fail after retries), KafkaError when the broker is too old; anything narrower is that query's result.
        """
        wanted = tuple(dict.fromkeys(queries))
        if not wanted:
            return {}
        async with self._lock:
            deadline = self._now() + self.settings.retry_budget
            await self._connect(deadline)
            self._forget_unused({q.group for q in wanted})
            before = collections.Counter(self.requests_by_api)
            result = await self._read(wanted, deadline)
            self._log.debug(
                "kafka_offsets_read",
                queries=len(wanted),
                errors=sum(isinstance(r, KafkaError) for r in result.values()),
                requests=dict(self.requests_by_api - before),
            )
            return result

    async def _read(self, wanted: tuple[GroupQuery, ...], deadline: float) -> ReadResult:
        explicit = {topic for q in wanted if q.topics is not None for topic in q.topics}
        await self._ensure_metadata(explicit, deadline)
        committed, group_errors = await self._fetch_committed(self._fetch_spec(wanted), deadline)

        discovered: set[str] = set()
        for q in wanted:
            if q.topics is None and q.group in committed:
                discovered.update(tp.topic for tp in committed[q.group])
        for offsets in committed.values():
            for tp in offsets:
                info = self._topics.get(tp.topic)
                if info is not None and info.problem is None and tp.partition not in info.leaders:
                    del self._topics[tp.topic]  # the topic has grown: read its partitions again
        await self._ensure_metadata(explicit | discovered, deadline)

        layouts: dict[GroupQuery, Layout | KafkaError] = {}
        for q in wanted:
            if q.group in group_errors:
                layouts[q] = group_errors[q.group]
            else:
                layouts[q] = self._layout(q, committed[q.group])
        partitions = {
            TopicPartition(topic, partition)
            for layout in layouts.values()
            if not isinstance(layout, KafkaError)
            for topic, parts in layout.items()
            for partition in parts
        }
        ends, starts, reasons = await self._list_offsets(partitions, deadline)

        result: ReadResult = {}
        for q, layout in layouts.items():
            if isinstance(layout, KafkaError):
                result[q] = layout
                continue
            rows: list[PartitionOffsets] = []
            failure: KafkaError | None = None
            for topic, parts in layout.items():
                for partition in parts:
                    tp = TopicPartition(topic, partition)
                    end = ends.get(tp)
                    if end is None:
                        reason = reasons.get(tp, "no log end offset")
                        failure = PartitionError(
                            f"group {q.group!r}: topic {topic!r} partition {partition}: {reason}"
                        )
                        break
                    rows.append(
                        PartitionOffsets(topic, partition, committed[q.group].get(tp), end, starts.get(tp))
                    )
                if failure is not None:
                    break
            result[q] = failure if failure is not None else tuple(rows)
        return result

    def _fetch_spec(self, wanted: Iterable[GroupQuery]) -> dict[str, dict[str, list[int]] | None]:
        """What OffsetFetch asks per group: known partitions of its named topics, or None for all topics."""
        spec: dict[str, dict[str, list[int]] | None] = {}
        for q in wanted:
            if q.topics is None:
                spec[q.group] = None
                continue
            topics = spec.setdefault(q.group, {})
            if topics is None:
                continue
            for topic in q.topics:
                info = self._topics.get(topic)
                if info is not None and info.problem is None:
                    topics[topic] = sorted(info.leaders)
        return spec

    def _layout(self, q: GroupQuery, committed: Mapping[TopicPartition, int | None]) -> Layout | KafkaError:
        named = q.topics is not None
        topics = sorted(set(q.topics) if q.topics is not None else {tp.topic for tp in committed})
        layout: Layout = {}
        for topic in topics:
            info = self._topics.get(topic)
            if info is None:
                return GroupError(q.group, f"topic {topic!r}: no metadata", retriable=True)
            if info.problem is _TOPIC_MISSING and not named:
                continue  # offsets left behind by a deleted topic
            if info.problem is not None:
                sep = " " if info.problem is _TOPIC_MISSING else ": "
                return GroupError(
                    q.group, f"topic {topic!r}{sep}{info.problem.name}", retriable=info.problem.retriable
                )
            layout[topic] = tuple(sorted(info.leaders))
        return layout

    async def _fetch_committed(
        self, spec: Mapping[str, Mapping[str, Sequence[int]] | None], deadline: float
    ) -> tuple[dict[str, dict[TopicPartition, int | None]], dict[str, KafkaError]]:
        committed: dict[str, dict[TopicPartition, int | None]] = {
            g: {} for g, topics in spec.items() if topics == {}
        }
        errors: dict[str, KafkaError] = {}
        reasons: dict[str, str] = {}
        pending = {g for g in spec if g not in committed}

        async def attempt() -> bool:
            unlocated = sorted(g for g in pending if g not in self._coordinators)
            if unlocated:
                await self._locate(unlocated, pending, errors, reasons)
            by_node: dict[int, list[str]] = collections.defaultdict(list)
            for group in sorted(pending):
                if group in self._coordinators:
                    by_node[self._coordinators[group]].append(group)
            jobs = list(by_node.items())
            replies = await _gather(
                *(self._offset_fetch(node, {g: spec[g] for g in groups}) for node, groups in jobs)
            )
            for (_node, groups), reply in zip(jobs, replies, strict=True):
                if isinstance(reply, KafkaUnavailable):
                    for group in groups:
                        reasons[group] = str(reply)
                        self._coordinators.pop(group, None)
                    continue
                answered = {entry.group: entry for entry in reply}
                for group in groups:
                    entry = answered.get(group)
                    if entry is None:
                        reasons[group] = "missing from the OffsetFetch answer"
                        continue
                    self._take_committed(entry, pending, committed, errors, reasons)
            return not pending

        await self._until_settled(attempt, deadline)
        for group in pending:
            errors[group] = KafkaUnavailable(f"group {group!r}: {reasons.get(group, 'coordinator unknown')}")
        return committed, errors

    def _take_committed(
        self,
        entry: protocol.GroupCommitted,
        pending: set[str],
        committed: dict[str, dict[TopicPartition, int | None]],
        errors: dict[str, KafkaError],
        reasons: dict[str, str],
    ) -> None:
        group = entry.group
        problem, where = None, ""
        if entry.error_code == _GROUP_ID_NOT_FOUND:
            pass  # a group that never committed: no offsets, like an unknown group on older brokers
        elif entry.error_code:
            problem = _broker_error(entry.error_code)
            if problem.coordinator_moved:
                self._coordinators.pop(group, None)
        else:
            for item in entry.partitions:
                if item.error_code:
                    problem = _broker_error(item.error_code)
                    where = f"topic {item.topic!r} partition {item.partition}: "
                    break
        if problem is None:
            committed[group] = {TopicPartition(i.topic, i.partition): i.offset for i in entry.partitions}
            pending.discard(group)
        elif problem.retriable:
            reasons[group] = f"OffsetFetch: {where}{problem.name}"
        else:
            errors[group] = GroupError(group, f"{where}{problem.name}")
            pending.discard(group)

    async def _locate(
        self, groups: Sequence[str], pending: set[str], errors: dict[str, KafkaError], reasons: dict[str, str]
    ) -> None:
        """One FindCoordinator for all these groups; a transport failure means the cluster is unreachable."""
        reply = await self._send(
            self._any_node(), protocol.FindCoordinatorRequest(groups), api="FindCoordinator"
        )
        found = protocol.decode_find_coordinator(reply)
        self._learn_brokers(
            (protocol.Broker(c.node_id, c.host, c.port, None) for c in found if not c.error_code),
            complete=False,
        )
        for c in found:
            if c.group not in pending:
                continue
            if not c.error_code:
                self._coordinators[c.group] = c.node_id
                continue
            problem = _broker_error(c.error_code)
            if problem.retriable:
                reasons[c.group] = f"FindCoordinator: {problem.name}"
            else:
                errors[c.group] = GroupError(c.group, f"FindCoordinator: {problem.name}")
                pending.discard(c.group)

    async def _offset_fetch(
        self, node: int, groups: Mapping[str, Mapping[str, Sequence[int]] | None]
    ) -> tuple[protocol.GroupCommitted, ...] | KafkaUnavailable:
        try:
            reply = await self._send(node, protocol.OffsetFetchRequest(groups), api="OffsetFetch")
        except KafkaUnavailable as exc:
            return exc
        return protocol.decode_offset_fetch(reply)

    async def _list_offsets(
        self, partitions: Collection[TopicPartition], deadline: float
    ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int], dict[TopicPartition, str]]:
        """Log end and log start offsets; a partition missing from ``ends`` failed (``reasons`` says why)."""
        ends: dict[TopicPartition, int] = {}
        starts: dict[TopicPartition, int] = {}
        reasons: dict[TopicPartition, str] = {}
        failed: set[TopicPartition] = set()
        isolation = protocol.READ_COMMITTED if self.settings.read_committed else protocol.READ_UNCOMMITTED

        def todo() -> dict[int, list[TopicPartition]]:
            return {
                protocol.LATEST: sorted(tp for tp in partitions if tp not in ends and tp not in failed),
                protocol.EARLIEST: sorted(tp for tp in partitions if tp not in starts and tp not in failed),
            }

        async def attempt() -> bool:
            wanted = todo()
            await self._refresh_metadata({tp.topic for tps in wanted.values() for tp in tps})
            jobs: list[tuple[int, int, list[TopicPartition]]] = []
            for timestamp, tps in wanted.items():
                for leader, led in self._by_leader(tps, reasons, failed).items():
                    jobs.append((timestamp, leader, led))
            replies = await _gather(
                *(self._list_node(leader, led, ts, isolation) for ts, leader, led in jobs)
            )
            for (timestamp, _leader, led), reply in zip(jobs, replies, strict=True):
                found = ends if timestamp == protocol.LATEST else starts
                if isinstance(reply, KafkaUnavailable):
                    for tp in led:
                        reasons[tp] = str(reply)
                        self._topics.pop(tp.topic, None)
                    continue
                answered = set()
                for item in reply:
                    tp = TopicPartition(item.topic, item.partition)
                    answered.add(tp)
                    if not item.error_code:
                        found[tp] = item.offset
                        continue
                    problem = _broker_error(item.error_code)
                    reasons[tp] = f"ListOffsets: {problem.name}"
                    if problem.stale_metadata:
                        self._topics.pop(tp.topic, None)
                    if not problem.retriable:
                        failed.add(tp)
                for tp in set(led) - answered:
                    reasons[tp] = "missing from the ListOffsets answer"
            return not any(todo().values())

        if partitions:
            await self._until_settled(attempt, deadline)
        return ends, starts, reasons

    def _by_leader(
        self,
        partitions: Iterable[TopicPartition],
        reasons: dict[TopicPartition, str],
        failed: set[TopicPartition],
    ) -> dict[int, list[TopicPartition]]:
        by_leader: dict[int, list[TopicPartition]] = collections.defaultdict(list)
        for tp in partitions:
            info = self._topics.get(tp.topic)
            if info is not None and info.problem is not None and not info.problem.retriable:
                reasons[tp] = f"topic {info.problem.name}"
                failed.add(tp)
                continue
            leader = None if info is None else info.leaders.get(tp.partition)
            if leader is None or leader < 0:
                reasons[tp] = "no leader known"
                self._topics.pop(tp.topic, None)
                continue
            by_leader[leader].append(tp)
        return by_leader

    async def _list_node(
        self, node: int, partitions: Sequence[TopicPartition], timestamp: int, isolation: int
    ) -> tuple[protocol.ListedOffset, ...] | KafkaUnavailable:
        by_topic: dict[str, list[int]] = collections.defaultdict(list)
        for tp in partitions:
            by_topic[tp.topic].append(tp.partition)
        request = protocol.ListOffsetsRequest(by_topic, timestamp=timestamp, isolation_level=isolation)
        try:
            reply = await self._send(node, request, api="ListOffsets")
        except KafkaUnavailable as exc:
            return exc
        return protocol.decode_list_offsets(reply)

    async def _ensure_metadata(self, topics: Collection[str], deadline: float) -> None:
        if topics:
            await self._until_settled(lambda: self._refresh_metadata(topics), deadline)

    async def _refresh_metadata(self, topics: Collection[str]) -> bool:
        """One Metadata request for the topics not fresh in the cache; True when none is left to retry."""
        now = self._now()
        stale = sorted(topic for topic in topics if not self._fresh(topic, now))
        if not stale:
            return True
        reply = await self._send(self._any_node(), protocol.metadata_request(stale), api="Metadata")
        cluster = protocol.decode_metadata(reply)
        self._learn_brokers(cluster.brokers, complete=True)
        now = self._now()
        for layout in cluster.topics:
            if layout.error_code == _TOPIC_MISSING.code:
                problem: _BrokerError | None = _TOPIC_MISSING
            else:
                problem = _broker_error(layout.error_code) if layout.error_code else None
            leaders = dict(layout.leaders) if problem is None else {}
            self._topics[layout.topic] = _TopicInfo(leaders=leaders, problem=problem, fetched_at=now)
        self._log.debug("kafka_metadata_refreshed", topics=stale)
        return all(self._fresh(topic, now) for topic in stale)

    def _fresh(self, topic: str, now: float) -> bool:
        info = self._topics.get(topic)
        if info is None or (info.problem is not None and info.problem.retriable):
            return False
        max_age = (
            self.settings.metadata_max_age if info.problem is None else self.settings.missing_topic_recheck
        )
        return now - info.fetched_at < max_age

    def _forget_unused(self, groups: Iterable[str]) -> None:
        """Drops coordinators of groups not read for a while and topics not refreshed for a while."""
        now = self._now()
        for group in groups:
            self._group_seen[group] = now
        horizon = now - 2 * self.settings.metadata_max_age
        for group in [g for g, seen in self._group_seen.items() if seen < horizon]:
            del self._group_seen[group]
            self._coordinators.pop(group, None)
        for topic in [t for t, info in self._topics.items() if info.fetched_at < horizon]:
            del self._topics[topic]

    async def _until_settled(self, attempt: Callable[[], Awaitable[bool]], deadline: float) -> None:
        """Repeats ``attempt`` while it reports retriable leftovers, within the read's retry policy.

        Retriable KafkaErrors raised by ``attempt`` are retried too and re-raised once the policy gives up.
        """
        try:
            async for trial in self._retrying(deadline):
                with trial:
                    if not await attempt():
                        raise _Unsettled
        except _Unsettled:
            return

    def _retrying(self, deadline: float) -> tenacity.AsyncRetrying:
        s = self.settings
        return tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(s.retry_attempts) | _StopAt(deadline, self._now),
            wait=tenacity.wait_exponential(multiplier=s.retry_backoff, max=s.retry_budget),
            retry=tenacity.retry_if_exception(_retriable),
            before_sleep=self._log_retry,
            reraise=True,
        )

    def _log_retry(self, retry_state: tenacity.RetryCallState) -> None:
        outcome = retry_state.outcome
        exc = None if outcome is None else outcome.exception()
        self._log.debug(
            "kafka_retry",
            attempt=retry_state.attempt_number,
            sleep=retry_state.upcoming_sleep,
            error=repr(exc),
        )

    async def _connect(self, deadline: float) -> None:
        if self._closed:
            raise KafkaError(f"{self.bootstrap}: the offset reader is closed")
        if self._client is not None:
            return

        async def attempt() -> bool:
            client = AIOKafkaClient(
                bootstrap_servers=self.bootstrap,
                client_id=self.settings.client_id,
                request_timeout_ms=int(self.settings.request_timeout * 1000),
                retry_backoff_ms=int(self.settings.retry_backoff * 1000),
                # Our own metadata cache decides when to refresh; the client's timer would only add requests.
                metadata_max_age_ms=24 * 3600 * 1000,
            )
            self._count("Metadata")  # bootstrap asks for the broker list
            try:
                await client.bootstrap()
            except _TRANSLATED as exc:
                await client.close()
                raise _translate(exc, f"{self.bootstrap}: bootstrap") from exc
            except BaseException:
                await client.close()
                raise
            self._client = client
            return True

        await self._until_settled(attempt, deadline)

    def _any_node(self) -> int | str:
        """A broker for requests any broker answers (aiokafka names bootstrap-only nodes by strings)."""
        node: int | str | None = self._client.get_random_node()
        if node is None:
            raise KafkaUnavailable(f"{self.bootstrap}: no broker known")
        return node

    def _learn_brokers(self, brokers: Iterable[protocol.Broker], *, complete: bool) -> None:
        """Tells aiokafka's client where node ids live; ``complete``: these are all the brokers."""
        cluster = self._client.cluster
        known = {
            b.nodeId: protocol.Broker(b.nodeId, b.host, b.port, b.rack)
            for b in cluster.brokers()
            if isinstance(b.nodeId, int)
        }
        merged = {} if complete else dict(known)
        merged.update((b.node_id, b) for b in brokers)
        if merged and merged != known:
            cluster.update_metadata(protocol.brokers_only_metadata([merged[n] for n in sorted(merged)]))

    def _count(self, api: str) -> None:
        self.requests_by_api[api] += 1
        self._metric.labels(api=api).inc()

    async def _send(self, node: int | str, request: object, *, api: str) -> Any:
        self._count(api)
        try:
            return await self._client.send(node, request)
        except _TRANSLATED as exc:
            raise _translate(exc, f"{self.bootstrap}: {api} to node {node}") from exc

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()


class ReaderPool:
    """One OffsetReader per bootstrap address: all targets of a cluster share its connections and caches."""

    def __init__(
        self, *, settings: ReaderSettings | None = None, registry: CollectorRegistry | None = None
    ) -> None:
        self.settings = settings if settings is not None else ReaderSettings()
        self._registry = registry if registry is not None else CollectorRegistry()
        self._readers: dict[str, OffsetReader] = {}

    async def __aenter__(self) -> ReaderPool:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def reader(self, bootstrap: str) -> OffsetReader:
        reader = self._readers.get(bootstrap)
        if reader is None:
            reader = OffsetReader(bootstrap, settings=self.settings, registry=self._registry)
            self._readers[bootstrap] = reader
        return reader

    async def read(self, *, bootstrap: str, queries: Sequence[GroupQuery]) -> ReadResult:
        """One cluster's read (see OffsetReader.read); raises when that cluster cannot be reached."""
        return await self.reader(bootstrap).read(queries=queries)

    async def read_all(
        self, *, queries: Mapping[str, Sequence[GroupQuery]]
    ) -> dict[str, ReadResult | KafkaError]:
        """Reads every cluster at once; a cluster that cannot be read gets its KafkaError instead."""
        clusters = list(queries)
        outcomes = await asyncio.gather(
            *(self.read(bootstrap=b, queries=queries[b]) for b in clusters), return_exceptions=True
        )
        result: dict[str, ReadResult | KafkaError] = {}
        for bootstrap, outcome in zip(clusters, outcomes, strict=True):
            if isinstance(outcome, BaseException) and not isinstance(outcome, KafkaError):
                raise outcome
            result[bootstrap] = outcome
        return result

    async def retain(self, bootstraps: Collection[str]) -> None:
        """Closes the readers of clusters no longer named."""
        for bootstrap in [b for b in self._readers if b not in bootstraps]:
            await self._readers.pop(bootstrap).close()

    @property
    def requests_by_api(self) -> collections.Counter[str]:
        total: collections.Counter[str] = collections.Counter()
        for reader in self._readers.values():
            total.update(reader.requests_by_api)
        return total

    async def close(self) -> None:
        readers, self._readers = list(self._readers.values()), {}
        for reader in readers:
            await reader.close()


async def describe_lag(
    *, bootstrap: str, group: str, topic: str | None = None, settings: ReaderSettings | None = None
) -> GroupOffsets:
    """Offsets of one group (one topic, or every topic it committed to), for ``queue-autoscaler lag``."""
    query = GroupQuery(group, None if topic is None else (topic,))
    async with OffsetReader(bootstrap, settings=settings) as reader:
        outcome = (await reader.read(queries=[query]))[query]
    if isinstance(outcome, KafkaError):
        raise outcome
    return outcome
