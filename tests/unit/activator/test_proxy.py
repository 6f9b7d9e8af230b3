"""Forwarding details against special-purpose pods: bodies, limits, broken upstreams."""

from __future__ import annotations

import asyncio
import gzip
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from autoscaler.activator import endpoints, fields, proxy
from devstack import loopback
from tests.unit.activator import helpers
from tests.unit.activator.conftest import ORDERS, Stack, make_stack


@asynccontextmanager
async def upstream(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[endpoints.Address]:
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", handler)
    async with loopback.running(app, auto_decompress=False) as port:
        yield endpoints.Address("127.0.0.1", port)


def test_end_to_end_drops_the_fixed_hop_by_hop_set_and_what_connection_lists() -> None:
    headers = CIMultiDict(
        [
            ("Connection", "close, X-A"),
            ("Connection", "x-b"),
            ("X-A", "1"),
            ("X-B", "2"),
            ("Proxy-Anything", "3"),
            ("Transfer-Encoding", "chunked"),
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
        ]
    )
    assert list(fields.end_to_end(headers).items()) == [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]


def test_the_upstream_url_only_ever_points_at_the_endpoint() -> None:
    address = endpoints.Address("fd00::7", 8080)
    for target in ["//evil.example/x", "/@evil.example", "/a?b=http://evil.example/", "/%2F%2Fx#frag"]:
        url = fields.upstream_url(address, target)
        assert (url.host, url.port) == ("fd00::7", 8080)
        assert url.raw_path_qs == target
    with pytest.raises(ValueError, match="origin-form"):
        fields.upstream_url(address, "http://evil.example/")


async def test_a_compressed_request_body_is_forwarded_compressed(stack: Stack) -> None:
    received: list[tuple[bytes, str]] = []

    async def record(request: web.Request) -> web.Response:
        received.append((await request.read(), request.headers.get("Content-Encoding", "")))
        return web.Response(body=gzip.compress(b"answer"), headers={"Content-Encoding": "gzip"})

    stack.route()
    packed = gzip.compress(b"hello " * 100)
    async with upstream(record) as address:
        stack.activator.endpoints.update(ORDERS, [address])
        answer = await stack.send(method="POST", headers={"Content-Encoding": "gzip"}, data=packed)
    assert received == [(packed, "gzip")]
    assert answer.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(answer.body) == b"answer"


async def test_a_large_streamed_body_passes_both_ways(stack: Stack) -> None:
    async def echo(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        async for chunk in request.content.iter_chunked(10_000):
            await response.write(chunk)
        await response.write_eof()
        return response

    stack.route()
    payload = bytes(range(256)) * 8000
    async with upstream(echo) as address:
        stack.activator.endpoints.update(ORDERS, [address])
        async with stack.client.put(
            f"http://127.0.0.1:{stack.port}/", headers={"Host": "orders.shop"}, data=io.BytesIO(payload)
        ) as response:
            status, body = response.status, await response.read()
    assert status == 200
    assert body == payload


async def test_head_and_no_content_answers_are_relayed(stack: Stack) -> None:
    async def bodiless(request: web.Request) -> web.Response:
        if request.method == "HEAD":
            return web.Response(body=b"x" * 42)
        return web.Response(status=204)

    stack.route()
    async with upstream(bodiless) as address:
        stack.activator.endpoints.update(ORDERS, [address])
        head = await stack.send(method="HEAD")
        empty = await stack.send(method="DELETE")
    assert head.status == 200
    assert head.headers["Content-Length"] == "42"
    assert head.body == b""
    assert empty.status == 204


async def test_a_declared_response_over_the_limit_gets_502() -> None:
    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 100)

    async with make_stack(limits=proxy.Limits(max_response_body=50)) as stack, upstream(big) as address:
        stack.route()
        stack.activator.endpoints.update(ORDERS, [address])
        answer = await stack.send()
    assert answer.status == 502
    assert b"exceeds 50 bytes" in answer.body


async def test_a_streamed_response_over_the_limit_is_cut_so_the_client_sees_it_incomplete() -> None:
    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(10):
            await response.write(b"x" * 20)
        await response.write_eof()
        return response

    async with make_stack(limits=proxy.Limits(max_response_body=50)) as stack, upstream(stream) as address:
        stack.route()
        stack.activator.endpoints.update(ORDERS, [address])
        with pytest.raises(aiohttp.ClientPayloadError):
            await stack.send()
        await helpers.eventually(lambda: stack.activator.buffer.held == 0)
        assert stack.sample("queue_autoscaler_activator_responses_total", code="200") == 1.0


async def test_an_upstream_that_dies_mid_response_cuts_the_client_connection(stack: Stack) -> None:
    async def dies(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"partial")
        assert request.transport is not None
        request.transport.abort()
        return response

    stack.route()
    async with upstream(dies) as address:
        stack.activator.endpoints.update(ORDERS, [address])
        with pytest.raises(aiohttp.ClientPayloadError):
            await stack.send()


async def test_an_upstream_that_dies_short_of_its_declared_length_cuts_the_client_connection(
    stack: Stack,
) -> None:
    async def short(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "100"})
        await response.prepare(request)
        await response.write(b"partial")
        assert request.transport is not None
        request.transport.abort()
        return response

    stack.route()
    async with upstream(short) as address:
        stack.activator.endpoints.update(ORDERS, [address])
        with pytest.raises(aiohttp.ClientPayloadError):
            await stack.send()


async def test_a_small_response_of_declared_length_is_relayed_whole_with_its_headers(stack: Stack) -> None:
    async def small(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 1000, headers={"X-Kind": "small", "Content-Type": "text/csv"})

    stack.route()
    async with upstream(small) as address:
        stack.activator.endpoints.update(ORDERS, [address])
        answer = await stack.send()
    assert (answer.status, answer.body) == (200, b"x" * 1000)
    assert (answer.headers["X-Kind"], answer.headers["Content-Type"]) == ("small", "text/csv")
    assert answer.headers["Content-Length"] == "1000"


async def test_an_upstream_that_closes_without_answering_gets_502(stack: Stack) -> None:
    async def hangs_up(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.abort()
        return web.Response()

    stack.route()
    async with upstream(hangs_up) as address:
        stack.activator.endpoints.update(ORDERS, [address])
        answer = await stack.send()
    assert answer.status == 502


async def test_an_upstream_slower_than_the_read_timeout_gets_504() -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response()

    async with make_stack(limits=proxy.Limits(read_timeout=0.05)) as stack, upstream(slow) as address:
        stack.route()
        stack.activator.endpoints.update(ORDERS, [address])
        answer = await stack.send()
        release.set()
    assert answer.status == 504
    assert b"did not answer in time" in answer.body


async def test_redirects_are_relayed_not_followed(stack: Stack) -> None:
    async def redirect(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "http://evil.example/"})

    stack.route()
    async with upstream(redirect) as address:
        stack.activator.endpoints.update(ORDERS, [address])
        async with stack.client.get(
            f"http://127.0.0.1:{stack.port}/", headers={"Host": "orders.shop"}, allow_redirects=False
        ) as response:
            assert response.status == 302
            assert response.headers["Location"] == "http://evil.example/"


def test_both_forwarding_paths_send_the_target_as_sent_but_without_a_bare_question_mark() -> None:
    assert fields.forwarded_target("/?") == "/"
    assert fields.forwarded_target("/a?b=1") == "/a?b=1"
    assert fields.forwarded_target("/a??") == "/a??"
    assert fields.forwarded_target("//x/%2F") == "//x/%2F"
    with pytest.raises(ValueError, match="not origin-form"):
        fields.forwarded_target("*")
