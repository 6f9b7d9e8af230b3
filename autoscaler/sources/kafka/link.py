"""The client of one Kafka connection: built from the connection's files, rebuilt when they change, and
held back after the broker refused its credentials or certificate. Every request goes through ``send``,
which counts it (``requests_by_api`` and ``queue_autoscaler_kafka_requests_total``) and translates errors.
"""

from __future__ import annotations

import asyncio
import collections
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka.client import AIOKafkaClient
from prometheus_client import CollectorRegistry, Counter

from autoscaler import connections
from autoscaler.errors import KafkaError, KafkaUnavailable
from autoscaler.observability.log_events import KafkaLog
from autoscaler.sources.kafka import broker_errors, connection, protocol, retry

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
class _Refused:
    """The broker refused the connection's credentials or certificate: the error, until when it stands."""

    error: KafkaError
    stamp: tuple[object, ...]
    retry_at: float
    backoff: float


def _retrieve(task: asyncio.Task[Any]) -> None:
    """A connection attempt whose reader stopped waiting: its error is reported by the next read."""
    if not task.cancelled():
        task.exception()


async def _discard(opening: asyncio.Task[Any]) -> None:
    """Stops a background connection attempt and closes the client it made, if it made one."""
    opening.cancel()
    made = (await asyncio.gather(opening, return_exceptions=True))[0]
    if made is not None and not isinstance(made, BaseException):
        await made.close()


class Link:
    """One connection's aiokafka client and the requests sent over it."""

    def __init__(
        self,
        target: connections.KafkaConnection,
        *,
        settings: retry.ReaderSettings,
        registry: CollectorRegistry,
        on_reconnect: Callable[[], None],
        log: Any,
    ) -> None:
        self.connection = target
        self.settings = settings
        self.where = connection.describe(target)
        self.requests_by_api: collections.Counter[str] = collections.Counter()
        self.client: Any = None
        self._metric = _requests_counter(registry)
        self._on_reconnect = on_reconnect
        self._log = log
        self._stamp: tuple[object, ...] = ()
        self._refused: _Refused | None = None
        self._opening: asyncio.Task[Any] | None = None
        self._opening_stamp: tuple[object, ...] = ()
        self._closed = False

    async def close(self) -> None:
        self._closed = True
        opening, self._opening = self._opening, None
        if opening is not None:
            await _discard(opening)
        await self._drop_client()

    async def _drop_client(self) -> None:
        client, self.client = self.client, None
        self._on_reconnect()
        if client is not None:
            await client.close()

    async def connect(self, deadline: float) -> None:
        """A client built from the connection's files as they are now.

        When a file changes, the new client is made in the background while the current one (authenticated
        with the previous credentials) keeps serving reads; it replaces it once its handshake succeeded, and
        a refused handshake ends the current one too. The handshake is shielded: a read cancelled by its
        caller's deadline leaves it running for the next read (TLS and SASL handshakes can outlast a tick).
        """
        if self._closed:
            raise KafkaError(f"{self.where}: the offset reader is closed")
        stamp = connection.stamp(self.connection)
        if self.client is not None and stamp == self._stamp:
            return
        refused = self._refused
        if refused is not None and refused.stamp == stamp and retry.now() < refused.retry_at:
            raise refused.error
        if self._opening is not None and self._opening_stamp != stamp:
            stale, self._opening = self._opening, None  # made from files that changed again since
            await _discard(stale)
        if self._opening is None:
            self._opening_stamp = stamp
            self._opening = asyncio.create_task(
                self._open(stamp, deadline), name=f"kafka connect {self.where}"
            )
            self._opening.add_done_callback(_retrieve)
        opening = self._opening
        if self.client is not None and not opening.done():
            return  # the current client serves this read
        try:
            client = await asyncio.shield(opening)
        except KafkaError:
            if self._opening is opening:
                self._opening = None
            await self._drop_client()
            raise
        if self._opening is opening:
            self._opening = None
        if self.client is not None:
            self._log.info(KafkaLog.CONNECTION_RENEWED, detail="credential or certificate files changed")
            await self._drop_client()
        self.client, self._stamp, self._refused = client, stamp, None

    async def _open(self, stamp: tuple[object, ...], deadline: float) -> Any:
        opts = connection.options(self.connection)
        # A refused handshake is learnt from one connection of our own: aiokafka's bootstrap hides the reason.
        reason = await connection.diagnose(
            self.connection, opts, client_id=self.settings.client_id, timeout=self.settings.request_timeout
        )
        if reason is not None:
            self._refuse(stamp, reason)
        made: list[Any] = []

        async def attempt() -> bool:
            client = AIOKafkaClient(
                bootstrap_servers=self.connection.bootstrap_servers,
                client_id=self.settings.client_id,
                request_timeout_ms=int(self.settings.request_timeout * 1000),
                retry_backoff_ms=int(self.settings.retry_backoff * 1000),
                # Our own metadata cache decides when to refresh; the client's timer would only add requests.
                metadata_max_age_ms=24 * 3600 * 1000,
                **opts.kwargs,
            )
            self.count("Metadata")  # bootstrap asks for the broker list
            try:
                await client.bootstrap()
            except broker_errors.TRANSLATED as exc:
                await client.close()
                raise broker_errors.translate(exc, f"{self.where}: bootstrap") from exc
            except BaseException:
                await client.close()
                raise
            made.append(client)
            return True

        await retry.until_settled(attempt, deadline, settings=self.settings, log=self._log)
        return made[0]

    def _refuse(self, stamp: tuple[object, ...], reason: str) -> None:
        """The broker refused the credentials or certificate: raise that, and back off until they change."""
        previous = self._refused
        backoff = (
            self.settings.refused_backoff
            if previous is None or previous.stamp != stamp
            else min(previous.backoff * 2, self.settings.refused_backoff_max)
        )
        error = KafkaError(f"{self.where}: {reason}")
        self._refused = _Refused(error, stamp, retry.now() + backoff, backoff)
        self._log.warning(KafkaLog.CONNECTION_REFUSED, reason=reason, retry_in=backoff)
        raise error

    def any_node(self) -> int | str:
        """A broker for requests any broker answers (aiokafka names bootstrap-only nodes by strings)."""
        node: int | str | None = self.client.get_random_node()
        if node is None:
            raise KafkaUnavailable(f"{self.where}: no broker known")
        return node

    def learn_brokers(self, brokers: Iterable[protocol.Broker], *, complete: bool) -> None:
        """Tells aiokafka's client where node ids live; ``complete``: these are all the brokers."""
        cluster = self.client.cluster
        known = {
            b.nodeId: protocol.Broker(b.nodeId, b.host, b.port, b.rack)
            for b in cluster.brokers()
            if isinstance(b.nodeId, int)
        }
        merged = {} if complete else dict(known)
        merged.update((b.node_id, b) for b in brokers)
        if merged and merged != known:
            cluster.update_metadata(protocol.brokers_only_metadata([merged[n] for n in sorted(merged)]))

    def count(self, api: str) -> None:
        self.requests_by_api[api] += 1
        self._metric.labels(api=api).inc()

    async def send(self, node: int | str, request: object, *, api: str) -> Any:
        self.count(api)
        try:
            return await self.client.send(node, request)
        except broker_errors.TRANSLATED as exc:
            raise broker_errors.translate(exc, f"{self.where}: {api} to node {node}") from exc
