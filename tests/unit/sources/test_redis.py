"""The Redis Streams reader: one pipelined round trip for every stream, null lag kept as unknown."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from redis.exceptions import ResponseError

from autoscaler.errors import BacklogError, SourceUnavailable
from autoscaler.sources import redis
from autoscaler.sources.reading import ReaderSettings
from tests.unit.sources.fakes import FakePipe

GROUPS: dict[str, object] = {
    "orders": [
        {"name": "workers", "consumers": 2, "pending": 3, "lag": 12},
        {"name": "audit", "consumers": 1, "pending": 0, "lag": None},
    ],
    "emails": [{"name": "senders", "consumers": 1, "pending": 1, "lag": 0}],
    "text": ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
}
LENGTHS = {"orders": 100, "emails": 7}


def server(command: tuple[str, ...]) -> object:
    name, key = command
    if name == "XINFO GROUPS":
        return GROUPS.get(key, ResponseError("no such key"))
    return LENGTHS.get(key, 0)


def reader(pipe: FakePipe, registry: CollectorRegistry | None = None) -> redis.StreamReader:
    return redis.StreamReader(
        "redis://:hunter2@redis:6379/0",
        pipe=pipe,
        settings=ReaderSettings(retry_backoff=0.0),
        registry=registry,
    )


async def test_every_group_of_every_stream_is_read_in_one_round_trip_with_xlen_only_where_asked() -> None:
    pipe = FakePipe(server)
    workers = redis.StreamQuery("orders", "workers", length=True)
    audit = redis.StreamQuery("orders", "audit")
    senders = redis.StreamQuery("emails", "senders")

    result = await reader(pipe).read(queries=[workers, audit, senders])

    assert result[workers] == redis.StreamBacklog(lag=12, pending=3, length=100)
    assert result[senders] == redis.StreamBacklog(lag=0, pending=1)
    assert pipe.round_trips == [[("XINFO GROUPS", "emails"), ("XINFO GROUPS", "orders"), ("XLEN", "orders")]]


async def test_a_null_lag_is_unknown_never_zero() -> None:
    audit = redis.StreamQuery("orders", "audit")

    result = await reader(FakePipe(server)).read(queries=[audit])

    assert result[audit] == redis.StreamBacklog(lag=None, pending=0)


async def test_a_missing_stream_a_missing_group_and_a_key_of_another_type_are_clear_per_query_errors() -> (
    None
):
    missing_key = redis.StreamQuery("nope", "workers")
    missing_group = redis.StreamQuery("orders", "nobody")
    not_a_stream = redis.StreamQuery("text", "workers")
    fine = redis.StreamQuery("emails", "senders")

    result = await reader(FakePipe(server)).read(queries=[missing_key, missing_group, not_a_stream, fine])

    assert isinstance(result[missing_key], BacklogError)
    assert str(result[missing_key]) == "stream 'nope' does not exist"
    assert isinstance(result[missing_group], BacklogError)
    assert "no consumer group 'nobody' (NOGROUP)" in str(result[missing_group])
    assert isinstance(result[not_a_stream], BacklogError)
    assert "is not a stream" in str(result[not_a_stream])
    assert result[fine] == redis.StreamBacklog(lag=0, pending=1)


async def test_a_failed_round_trip_is_retried_and_then_read() -> None:
    pipe = FakePipe(server, down=1)
    query = redis.StreamQuery("emails", "senders")

    result = await reader(pipe).read(queries=[query])

    assert result[query] == redis.StreamBacklog(lag=0, pending=1)
    assert len(pipe.round_trips) == 2


async def test_an_unreachable_server_gives_every_query_the_error_after_the_retries() -> None:
    pipe = FakePipe(server, down=10)
    a, b = redis.StreamQuery("emails", "senders"), redis.StreamQuery("orders", "workers")

    result = await reader(pipe).read(queries=[a, b])

    assert isinstance(result[a], SourceUnavailable)
    assert isinstance(result[b], SourceUnavailable)
    assert len(pipe.round_trips) == 3


async def test_round_trips_are_counted_as_pipeline_requests_of_the_redis_source() -> None:
    registry = CollectorRegistry()
    stream_reader = reader(FakePipe(server), registry)

    await stream_reader.read(queries=[redis.StreamQuery(f"s{i}", "g") for i in range(100)])

    labels = {"source": "redis", "api": "pipeline"}
    assert registry.get_sample_value("queue_autoscaler_source_requests_total", labels) == 1
