"""Backlog of NATS JetStream consumers from the server's monitoring endpoint: one GET per account per read.

``GET /jsz?consumers=true&acc=<account>`` lists every stream and consumer of the account at once. A
consumer's backlog is ``num_pending`` (not yet delivered) and ``num_ack_pending`` (delivered, not yet
acknowledged). A consumer, stream or account missing from the answer is an error of the queries that name
it, never the stream's sequence numbers; an endpoint that cannot be reached is every query's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType

import structlog
from prometheus_client import CollectorRegistry

from autoscaler.errors import BacklogError, SourceError, SourceUnavailable
from autoscaler.model import ConsumerBacklog as ConsumerBacklog
from autoscaler.observability.log_events import SourceLog
from autoscaler.sources import reading
from autoscaler.sources.http import AiohttpGetter, JsonAnswer, JsonGetter

log = structlog.get_logger(__name__)

SOURCE = "nats"
API = "jsz"
DEFAULT_ACCOUNT = "$G"


@dataclass(frozen=True, slots=True)
class ConsumerQuery:
    stream: str
    consumer: str
    account: str = DEFAULT_ACCOUNT


ConsumerResult = ConsumerBacklog | SourceError

_Consumers = dict[str, dict[str, Mapping[str, object]]]
"""One account's consumers: stream name -> consumer name -> the consumer's entry in the answer."""


class ConsumerReader:
    """Reads one NATS server's /jsz for many consumers at once."""

    def __init__(
        self,
        monitoring_url: str,
        *,
        getter: JsonGetter | None = None,
        settings: reading.ReaderSettings | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.monitoring_url = monitoring_url.rstrip("/")
        self.settings = settings if settings is not None else reading.ReaderSettings()
        self.metrics = reading.SourceMetrics(SOURCE, registry)
        self._own_getter = getter is None
        self._getter: JsonGetter = (
            getter if getter is not None else AiohttpGetter(timeout=self.settings.request_timeout)
        )
        self._log = log.bind(source=SOURCE, server=self.monitoring_url)

    async def __aenter__(self) -> ConsumerReader:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_getter and isinstance(self._getter, AiohttpGetter):
            await self._getter.close()

    async def read(self, *, queries: Sequence[ConsumerQuery]) -> dict[ConsumerQuery, ConsumerResult]:
        """Each query's backlog or its error; never raises for the server's faults (each query gets them)."""
        wanted = tuple(dict.fromkeys(queries))
        if not wanted:
            return {}
        return await reading.timed(self.metrics, lambda: self._read(wanted))

    async def _read(self, wanted: tuple[ConsumerQuery, ...]) -> dict[ConsumerQuery, ConsumerResult]:
        accounts = sorted({q.account for q in wanted})
        answers = await asyncio.gather(*(self._account(a) for a in accounts), return_exceptions=True)
        by_account: dict[str, _Consumers | SourceError] = {}
        for account, answer in zip(accounts, answers, strict=True):
            if isinstance(answer, BaseException) and not isinstance(answer, SourceError):
                raise answer
            by_account[account] = answer
        result = {q: _select(q, by_account[q.account]) for q in wanted}
        self._log.debug(
            SourceLog.READ_DONE,
            queries=len(wanted),
            accounts=len(accounts),
            errors=sum(isinstance(r, SourceError) for r in result.values()),
        )
        return result

    async def _account(self, account: str) -> _Consumers:
        where = f"nats {self.monitoring_url} account {account!r}"

        async def attempt() -> JsonAnswer:
            self.metrics.count(API)
            answer = await self._getter.get(
                f"{self.monitoring_url}/jsz", params={"consumers": "true", "acc": account}
            )
            if answer.status >= 500:
                raise SourceUnavailable(f"{where}: /jsz answered HTTP {answer.status}")
            if answer.status != 200:
                raise SourceError(f"{where}: /jsz answered HTTP {answer.status}: {answer.body!r:.200}")
            return answer

        answer = await reading.with_retries(attempt, settings=self.settings, log=self._log)
        return _consumers(answer.body, account, where)


def _consumers(body: object, account: str, where: str) -> _Consumers:
    if not isinstance(body, dict):
        raise SourceError(f"{where}: /jsz did not answer a JSON object")
    if body.get("disabled") is True:
        raise SourceError(f"{where}: JetStream is not enabled on this server")
    details = body.get("account_details")
    # Older servers answer every account whatever ``acc`` names: pick ours.
    mine = [
        d
        for d in (details if isinstance(details, list) else [])
        if isinstance(d, dict) and account in (d.get("name"), d.get("id"))
    ]
    if not mine:
        raise BacklogError(f"{where}: the account has no JetStream streams on this server")
    found: _Consumers = {}
    for detail in mine:
        streams = detail.get("stream_detail")
        for stream in streams if isinstance(streams, list) else []:
            if not isinstance(stream, dict) or not isinstance(stream.get("name"), str):
                continue
            consumers = found.setdefault(stream["name"], {})
            listed = stream.get("consumer_detail")
            for consumer in listed if isinstance(listed, list) else []:
                if isinstance(consumer, dict) and isinstance(consumer.get("name"), str):
                    consumers[consumer["name"]] = consumer
    return found


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _select(query: ConsumerQuery, consumers: _Consumers | SourceError) -> ConsumerResult:
    if isinstance(consumers, SourceError):
        return consumers
    stream = consumers.get(query.stream)
    if stream is None:
        return BacklogError(f"account {query.account!r}: stream {query.stream!r} does not exist")
    entry = stream.get(query.consumer)
    if entry is None:
        return BacklogError(f"stream {query.stream!r}: consumer {query.consumer!r} does not exist")
    pending, ack_pending = _count(entry.get("num_pending")), _count(entry.get("num_ack_pending"))
    if pending is None or ack_pending is None:
        return BacklogError(f"stream {query.stream!r} consumer {query.consumer!r}: /jsz gave no counts")
    return ConsumerBacklog(pending=pending, ack_pending=ack_pending)


async def read_consumer(*, monitoring_url: str, query: ConsumerQuery) -> ConsumerBacklog:
    """One consumer's backlog, for ``queue-autoscaler lag``; raises its error."""
    async with ConsumerReader(monitoring_url) as reader:
        outcome = (await reader.read(queries=[query]))[query]
    if isinstance(outcome, SourceError):
        raise outcome
    return outcome
