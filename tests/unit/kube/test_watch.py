"""The resumable list+watch: one list, watches resumed from the last resourceVersion, re-list only on 410."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import pytest

from autoscaler.kube import calls, watch
from tests.unit.kube.fakes import FakeListMethod, FakeResponse, deployment, event, listing


def name_of(obj: calls.JSON) -> str:
    metadata = obj["metadata"]
    if metadata.get("name", "").startswith("bad"):
        raise ValueError("rejected")
    return str(metadata["name"])


def make_watch(method: FakeListMethod, **kwargs: Any) -> watch.ResourceWatch[str]:
    return watch.ResourceWatch(
        method, parse=name_of, what="deployments", timeout_seconds=60, backoff_initial=0.001, **kwargs
    )


async def take(resource_watch: watch.ResourceWatch[str], count: int) -> list[watch.WatchEvent[str]]:
    taken: list[watch.WatchEvent[str]] = []
    async with asyncio.timeout(5), contextlib.aclosing(resource_watch.events()) as events:
        async for one in events:
            taken.append(one)
            if len(taken) == count:
                break
    return taken


def bookmark(version: str) -> bytes:
    return event("BOOKMARK", {"kind": "Deployment", "metadata": {"resourceVersion": version}})


async def test_it_lists_once_then_watches_from_the_list_resource_version() -> None:
    method = FakeListMethod(
        lists=[FakeResponse(200, listing([deployment("a", "5"), deployment("b", "6")], "10"))],
        watches=[
            FakeResponse(
                200,
                lines=[
                    event("ADDED", deployment("c", "11")),
                    event("MODIFIED", deployment("a", "12")),
                    event("DELETED", deployment("b", "13")),
                ],
            )
        ],
    )
    resource_watch = make_watch(method)

    events = await take(resource_watch, 4)

    assert events == [
        watch.Listed(("a", "b"), "10"),
        watch.Added("c"),
        watch.Modified("a"),
        watch.Deleted("b"),
    ]
    assert method.watch_calls[0]["resource_version"] == "10"
    assert method.watch_calls[0]["allow_watch_bookmarks"] is True
    assert method.watch_calls[0]["timeout_seconds"] == 60
    assert resource_watch.resource_version == "13"


async def test_a_watch_that_ends_is_reopened_from_the_last_bookmark_without_listing_again() -> None:
    method = FakeListMethod(
        lists=[FakeResponse(200, listing([], "10"))],
        watches=[
            FakeResponse(200, lines=[event("ADDED", deployment("a", "11")), bookmark("20")]),
            FakeResponse(200, lines=[bookmark("25")]),
            FakeResponse(200, lines=[event("ADDED", deployment("b", "30"))]),
        ],
    )
    resource_watch = make_watch(method)

    events = await take(resource_watch, 3)

    assert events == [watch.Listed((), "10"), watch.Added("a"), watch.Added("b")]
    assert [call["resource_version"] for call in method.watch_calls] == ["10", "20", "25"]
    assert resource_watch.lists == 1
    assert resource_watch.connections == 3


async def test_a_broken_connection_is_resumed_from_the_last_resource_version_without_listing_again() -> None:
    method = FakeListMethod(
        lists=[FakeResponse(200, listing([], "10"))],
        watches=[
            FakeResponse(
                200,
                lines=[event("ADDED", deployment("a", "11")), aiohttp.ClientPayloadError("connection lost")],
            ),
            aiohttp.ClientOSError(111, "Connect call failed"),
            FakeResponse(503, {"kind": "Status", "message": "unavailable"}),
            FakeResponse(200, lines=[event("ADDED", deployment("b", "12"))]),
        ],
    )
    resource_watch = make_watch(method)

    events = await take(resource_watch, 3)

    assert events == [watch.Listed((), "10"), watch.Added("a"), watch.Added("b")]
    assert [call["resource_version"] for call in method.watch_calls] == ["10", "11", "11", "11"]
    assert resource_watch.lists == 1


async def test_410_gone_in_the_stream_lists_again_and_the_new_list_replaces_everything() -> None:
    gone = {"kind": "Status", "status": "Failure", "reason": "Expired", "code": 410, "message": "too old"}
    method = FakeListMethod(
        lists=[
            FakeResponse(200, listing([deployment("a", "5")], "10")),
            FakeResponse(200, listing([deployment("b", "40")], "50")),
        ],
        watches=[
            FakeResponse(200, lines=[event("ERROR", gone)]),
            FakeResponse(200, lines=[event("ADDED", deployment("c", "51"))]),
        ],
    )
    resource_watch = make_watch(method)

    events = await take(resource_watch, 3)

    assert events == [watch.Listed(("a",), "10"), watch.Listed(("b",), "50"), watch.Added("c")]
    assert [call["resource_version"] for call in method.watch_calls] == ["10", "50"]
    assert (resource_watch.lists, resource_watch.expired) == (2, 1)


async def test_410_gone_as_the_answer_to_the_watch_request_lists_again() -> None:
    method = FakeListMethod(
        lists=[FakeResponse(200, listing([], "10")), FakeResponse(200, listing([], "60"))],
        watches=[FakeResponse(410, {"kind": "Status", "code": 410, "message": "too old"})],
    )
    resource_watch = make_watch(method)

    events = await take(resource_watch, 2)

    assert events == [watch.Listed((), "10"), watch.Listed((), "60")]
    assert resource_watch.expired == 1


async def test_a_long_list_is_read_page_by_page() -> None:
    method = FakeListMethod(
        lists=[
            FakeResponse(200, listing([deployment("a", "1")], "10", page="token-1")),
            FakeResponse(200, listing([deployment("b", "2")], "10")),
        ],
        watches=[],
    )
    resource_watch = make_watch(method, page_size=1, label_selector="app")

    events = await take(resource_watch, 1)

    assert events == [watch.Listed(("a", "b"), "10")]
    assert [(call["_continue"], call["limit"], call["label_selector"]) for call in method.list_calls] == [
        (None, 1, "app"),
        ("token-1", 1, "app"),
    ]


async def test_an_expired_continue_token_starts_the_list_again() -> None:
    method = FakeListMethod(
        lists=[
            FakeResponse(200, listing([deployment("a", "1")], "10", page="token-1")),
            FakeResponse(410, {"kind": "Status", "code": 410, "message": "continue expired"}),
            FakeResponse(200, listing([deployment("a", "1"), deployment("b", "2")], "20")),
        ],
        watches=[],
    )
    resource_watch = make_watch(method, page_size=1)

    events = await take(resource_watch, 1)

    assert events == [watch.Listed(("a", "b"), "20")]
    assert resource_watch.lists == 1


async def test_a_failed_list_is_retried() -> None:
    method = FakeListMethod(
        lists=[
            FakeResponse(500, {"kind": "Status", "message": "etcd leader changed"}),
            aiohttp.ServerDisconnectedError(),
            FakeResponse(200, listing([deployment("a", "1")], "10")),
        ],
        watches=[],
    )

    events = await take(make_watch(method), 1)

    assert events == [watch.Listed(("a",), "10")]
    assert len(method.list_calls) == 3


async def test_objects_the_parser_rejects_are_skipped_but_still_advance_the_resource_version() -> None:
    method = FakeListMethod(
        lists=[FakeResponse(200, listing([deployment("bad-1", "1"), deployment("a", "2")], "10"))],
        watches=[
            FakeResponse(200, lines=[event("ADDED", deployment("bad-2", "11"))]),
            FakeResponse(200, lines=[event("ADDED", deployment("b", "12"))]),
        ],
    )

    events = await take(make_watch(method), 2)

    assert events == [watch.Listed(("a",), "10"), watch.Added("b")]
    assert method.watch_calls[1]["resource_version"] == "11"


async def test_run_all_raises_the_first_failure_and_cancels_the_others() -> None:
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    async def fails() -> None:
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError, match="bug"):
        await watch.run_all([forever(), fails()])
    assert cancelled.is_set()


async def test_closing_the_stream_closes_the_open_watch_response() -> None:
    response = FakeResponse(200, lines=[event("ADDED", deployment("a", "11"))], hang=True)
    method = FakeListMethod(lists=[FakeResponse(200, listing([], "10"))], watches=[response])

    events = await take(make_watch(method), 2)

    assert events == [watch.Listed((), "10"), watch.Added("a")]
    assert response.closed


async def test_cancelling_a_consumer_closes_the_open_watch_response() -> None:
    response = FakeResponse(200, hang=True)
    method = FakeListMethod(lists=[FakeResponse(200, listing([], "10"))], watches=[response])
    received: list[watch.WatchEvent[str]] = []
    task = asyncio.create_task(watch.consume(make_watch(method), received.append))
    await asyncio.wait_for(method.watching.wait(), timeout=5)
    await asyncio.sleep(0)  # let the watch start reading

    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    assert received == [watch.Listed((), "10")]
    assert response.closed
