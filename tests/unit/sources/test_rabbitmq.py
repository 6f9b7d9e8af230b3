"""The RabbitMQ reader: one GET per vhost and page, live totals, our own pattern match, errors never 0."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry

from autoscaler.errors import BacklogError, SourceError, SourceUnavailable
from autoscaler.sources import rabbitmq
from autoscaler.sources.http import JsonAnswer
from autoscaler.sources.reading import ReaderSettings
from tests.unit.sources.fakes import FakeGetter

URL = "http://rabbit:15672"


def queue(name: str, ready: int | None, unacked: int | None) -> dict[str, object]:
    item: dict[str, object] = {"name": name}
    if ready is not None:
        item["messages_ready"] = ready
    if unacked is not None:
        item["messages_unacknowledged"] = unacked
    return item


def paged(items: list[dict[str, object]], page_size: int = 500) -> FakeGetter:
    """A management API holding ``items`` in vhost "/" (other vhosts: 404), served in pages."""

    def answer(url: str, params: Mapping[str, str]) -> JsonAnswer:
        if not url.endswith("/api/queues/%2F"):
            return JsonAnswer(404, {"error": "Object Not Found", "reason": "Not Found"})
        page, size = int(params["page"]), int(params["page_size"])
        count = max(1, -(-len(items) // size))
        chunk = items[(page - 1) * size : page * size]
        return JsonAnswer(200, {"items": chunk, "page": page, "page_count": count, "total_count": len(items)})

    return FakeGetter(answer)


def reader(getter: FakeGetter, *, retry_attempts: int = 3) -> rabbitmq.QueueReader:
    return rabbitmq.QueueReader(
        URL,
        username="autoscaler",
        password=lambda: "secret",
        getter=getter,
        settings=ReaderSettings(retry_backoff=0.0, retry_attempts=retry_attempts),
    )


async def test_one_request_answers_every_query_of_a_vhost_with_live_totals_of_three_columns() -> None:
    getter = paged([queue("a", 3, 4), queue("b", 0, 20), queue("c", 7, 0)])
    a, b = rabbitmq.QueueQuery("/", ("a",)), rabbitmq.QueueQuery("/", ("b", "c"))

    result = await reader(getter).read(queries=[a, b])

    assert result[a] == (rabbitmq.QueueCounts("a", "/", 3, 4),)
    assert result[b] == (rabbitmq.QueueCounts("b", "/", 0, 20), rabbitmq.QueueCounts("c", "/", 7, 0))
    assert len(getter.requests) == 1
    request = getter.requests[0]
    assert request.url == f"{URL}/api/queues/%2F"
    assert request.auth == ("autoscaler", "secret")
    assert request.params["disable_stats"] == "true"
    assert request.params["enable_queue_totals"] == "true"
    assert request.params["columns"] == "name,messages_ready,messages_unacknowledged"
    assert request.params["page_size"] == "500"


async def test_a_pattern_is_matched_whole_over_every_page_of_1200_queues_in_three_requests() -> None:
    items = [queue(f"work-{i:04d}", 1, 1) for i in range(1200)] + [queue("work-1-dlq", 50, 0)]
    getter = paged(items)
    query = rabbitmq.QueueQuery("/", pattern=r"work-\d+")

    result = await reader(getter).read(queries=[query])

    matched = result[query]
    assert not isinstance(matched, SourceError)
    assert len(matched) == 1200
    assert sorted(r.params["page"] for r in getter.requests) == ["1", "2", "3"]


async def test_a_missing_queue_is_an_error_of_its_query_only_never_zero() -> None:
    getter = paged([queue("a", 1, 0)])
    gone, fine = rabbitmq.QueueQuery("/", ("a", "gone")), rabbitmq.QueueQuery("/", ("a",))

    result = await reader(getter).read(queries=[gone, fine])

    assert isinstance(result[gone], BacklogError)
    assert "'gone' does not exist" in str(result[gone])
    assert result[fine] == (rabbitmq.QueueCounts("a", "/", 1, 0),)


async def test_a_pattern_that_matches_no_queue_is_an_error() -> None:
    query = rabbitmq.QueueQuery("/", pattern="orders-.*")

    result = await reader(paged([queue("orders", 1, 0)])).read(queries=[query])

    assert isinstance(result[query], BacklogError)


async def test_a_queue_listed_without_counts_is_an_error_not_zero() -> None:
    getter = paged([queue("a", None, None), queue("b", 5, None)])
    a, b = rabbitmq.QueueQuery("/", ("a",)), rabbitmq.QueueQuery("/", ("b",))

    result = await reader(getter).read(queries=[a, b])

    assert isinstance(result[a], BacklogError)
    assert "without message counts" in str(result[a])
    assert isinstance(result[b], BacklogError)


async def test_a_vhost_that_does_not_exist_fails_only_the_queries_naming_it() -> None:
    getter = paged([queue("a", 1, 0)])
    other, fine = rabbitmq.QueueQuery("orders", ("a",)), rabbitmq.QueueQuery("/", ("a",))

    result = await reader(getter).read(queries=[other, fine])

    assert isinstance(result[other], BacklogError)
    assert "vhost 'orders'" in str(result[other])
    assert sorted(r.url for r in getter.requests) == [f"{URL}/api/queues/%2F", f"{URL}/api/queues/orders"]
    assert not isinstance(result[fine], SourceError)


async def test_an_unreachable_management_api_is_retried_then_every_query_gets_the_error() -> None:
    getter = FakeGetter(lambda url, params: SourceUnavailable("connection refused"))
    query = rabbitmq.QueueQuery("/", ("a",))

    result = await reader(getter, retry_attempts=3).read(queries=[query])

    assert isinstance(result[query], SourceUnavailable)
    assert len(getter.requests) == 3


async def test_refused_credentials_are_not_retried() -> None:
    getter = FakeGetter(lambda url, params: JsonAnswer(401, {"error": "not_authorised"}))
    query = rabbitmq.QueueQuery("/", ("a",))

    result = await reader(getter, retry_attempts=3).read(queries=[query])

    assert isinstance(result[query], SourceError)
    assert not isinstance(result[query], SourceUnavailable)
    assert "refused the credentials" in str(result[query])
    assert len(getter.requests) == 1


async def test_a_server_error_then_an_answer_reads_the_counts() -> None:
    answers = [JsonAnswer(503, None), JsonAnswer(200, {"items": [queue("a", 2, 3)], "page_count": 1})]
    getter = FakeGetter(lambda url, params: answers.pop(0))
    query = rabbitmq.QueueQuery("/", ("a",))

    result = await reader(getter).read(queries=[query])

    assert result[query] == (rabbitmq.QueueCounts("a", "/", 2, 3),)


async def test_requests_are_counted_by_source_and_api_and_reads_timed_on_the_injected_registry() -> None:
    registry = CollectorRegistry()
    queue_reader = rabbitmq.QueueReader(
        URL, username="u", password=lambda: "p", getter=paged([queue("a", 1, 1)]), registry=registry
    )
    query = rabbitmq.QueueQuery("/", ("a",))

    await queue_reader.read(queries=[query])
    await queue_reader.read(queries=[query])

    labels = {"source": "rabbitmq", "api": "queues"}
    assert registry.get_sample_value("queue_autoscaler_source_requests_total", labels) == 2
    assert (
        registry.get_sample_value("queue_autoscaler_source_read_seconds_count", {"source": "rabbitmq"}) == 2
    )


async def test_a_404_that_is_not_the_management_apis_own_is_not_read_as_a_missing_vhost() -> None:
    getter = FakeGetter(lambda url, params: JsonAnswer(404, None))
    query = rabbitmq.QueueQuery("/", ("a",))

    result = await reader(getter).read(queries=[query])

    assert isinstance(result[query], SourceError)
    assert not isinstance(result[query], BacklogError)
    assert "no management API answers" in str(result[query])


async def test_a_queue_in_an_empty_vhost_of_zero_pages_is_missing_not_a_broken_answer() -> None:
    empty = JsonAnswer(200, {"items": [], "page": 1, "page_count": 0, "total_count": 0})
    query = rabbitmq.QueueQuery("/", ("a",))

    result = await reader(FakeGetter(lambda url, params: empty)).read(queries=[query])

    assert isinstance(result[query], BacklogError)
    assert "'a' does not exist" in str(result[query])
