"""The NATS JetStream reader: one /jsz per account, pending + ack pending, a missing consumer is an error."""

from __future__ import annotations

from collections.abc import Mapping

from autoscaler.errors import BacklogError, SourceError, SourceUnavailable
from autoscaler.sources import nats
from autoscaler.sources.http import JsonAnswer
from autoscaler.sources.reading import ReaderSettings
from tests.unit.sources.fakes import FakeGetter

URL = "http://nats:8222"


def consumer(name: str, pending: int, ack_pending: int) -> dict[str, object]:
    return {"name": name, "num_pending": pending, "num_ack_pending": ack_pending, "delivered": {}}


def account(name: str, streams: dict[str, list[dict[str, object]]]) -> dict[str, object]:
    return {
        "name": name,
        "id": name,
        "stream_detail": [
            {"name": s, "state": {"messages": 1000, "last_seq": 1000}, "consumer_detail": cs}
            for s, cs in streams.items()
        ],
    }


JSZ = {
    "server_id": "N1",
    "account_details": [
        account("$G", {"orders": [consumer("workers", 12, 3), consumer("audit", 0, 0)], "empty": []}),
        account("billing", {"invoices": [consumer("senders", 5, 0)]}),
    ],
}


def getter(body: object = JSZ) -> FakeGetter:
    def answer(url: str, params: Mapping[str, str]) -> JsonAnswer:
        return JsonAnswer(200, body)

    return FakeGetter(answer)


def reader(fake: FakeGetter) -> nats.ConsumerReader:
    return nats.ConsumerReader(URL, getter=fake, settings=ReaderSettings(retry_backoff=0.0))


async def test_one_jsz_request_per_account_answers_every_consumer_with_pending_and_ack_pending() -> None:
    fake = getter()
    workers, audit = nats.ConsumerQuery("orders", "workers"), nats.ConsumerQuery("orders", "audit")

    result = await reader(fake).read(queries=[workers, audit])

    assert result[workers] == nats.ConsumerBacklog(pending=12, ack_pending=3)
    assert result[audit] == nats.ConsumerBacklog(pending=0, ack_pending=0)
    assert [(r.url, r.params) for r in fake.requests] == [(f"{URL}/jsz", {"consumers": "true", "acc": "$G"})]


async def test_the_account_asked_for_is_picked_when_the_server_answers_every_account() -> None:
    fake = getter()
    senders = nats.ConsumerQuery("invoices", "senders", account="billing")
    not_here = nats.ConsumerQuery("orders", "workers", account="billing")

    result = await reader(fake).read(queries=[senders, not_here])

    assert result[senders] == nats.ConsumerBacklog(pending=5, ack_pending=0)
    assert isinstance(result[not_here], BacklogError)
    assert len(fake.requests) == 1


async def test_a_missing_consumer_is_an_error_never_the_streams_sequence() -> None:
    missing = nats.ConsumerQuery("orders", "gone")
    no_consumers = nats.ConsumerQuery("empty", "workers")
    no_stream = nats.ConsumerQuery("nope", "workers")

    result = await reader(getter()).read(queries=[missing, no_consumers, no_stream])

    assert isinstance(result[missing], BacklogError)
    assert "consumer 'gone' does not exist" in str(result[missing])
    assert isinstance(result[no_consumers], BacklogError)
    assert isinstance(result[no_stream], BacklogError)
    assert "stream 'nope' does not exist" in str(result[no_stream])


async def test_an_account_without_jetstream_and_a_server_without_jetstream_are_errors() -> None:
    query = nats.ConsumerQuery("orders", "workers", account="nobody")

    missing = await reader(getter({"account_details": []})).read(queries=[query])
    disabled = await reader(getter({"disabled": True})).read(queries=[query])

    assert isinstance(missing[query], BacklogError)
    assert isinstance(disabled[query], SourceError)
    assert "not enabled" in str(disabled[query])


async def test_an_unreachable_monitoring_endpoint_is_retried_then_every_query_gets_the_error() -> None:
    fake = FakeGetter(lambda url, params: SourceUnavailable("connection refused"))
    query = nats.ConsumerQuery("orders", "workers")

    result = await reader(fake).read(queries=[query])

    assert isinstance(result[query], SourceUnavailable)
    assert len(fake.requests) == 3
