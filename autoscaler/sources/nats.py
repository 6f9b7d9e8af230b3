"""Backlog of NATS JetStream consumers from the server's monitoring endpoint: one GET per account per read.

``GET /jsz?consumers=true&acc=<account>`` lists every stream and consumer of the account at once. A
consumer's backlog is ``num_pending`` (not yet delivered) and ``num_ack_pending`` (delivered, not yet
acknowledged). A consumer, stream or account missing from the answer is an error of the queries that name
it, never the stream's sequence numbers; an endpoint that cannot be reached is every query's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import structlog
from prometheus_client import CollectorRegistry

from autoscaler.errors import BacklogError, SourceError, SourceUnavailable
from autoscaler.model import ConsumerBacklog as ConsumerBacklog
from autoscaler.sources import reading
from autoscaler.sources.http import JsonAnswer, JsonGetter

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


class ConsumerReader(reading.HttpReader[ConsumerQuery, ConsumerResult]):
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
        super().__init__(
            SOURCE, self.monitoring_url, getter=getter, settings=settings, registry=registry, log=log
        )

    async def _read(self, wanted: tuple[ConsumerQuery, ...]) -> dict[ConsumerQuery, ConsumerResult]:
        accounts = sorted({q.account for q in wanted})
        by_account = await reading.gather_by(accounts, self._account)
        return self._done({q: _select(q, by_account[q.account]) for q in wanted}, accounts=len(accounts))

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
