"""The activator end to end: real pods on 127.0.0.1, the activator app on another port."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from autoscaler import errors
from autoscaler.activator import proxy, server, serving
from autoscaler.model import ConcurrencyReport, TargetConcurrency
from autoscaler.policy.annotations import PREFIX
from devstack import loopback
from tests.unit.activator import helpers
from tests.unit.activator.conftest import ORDERS, Stack, make_stack


async def test_a_request_for_a_ready_target_is_forwarded_and_answered(stack: Stack) -> None:
    stack.route()
    async with helpers.pods(1) as (pod,):
        stack.activator.endpoints.update(ORDERS, [pod.address])
        answer = await stack.send(
            "Orders.Shop.svc.cluster.local:8080", "/items?id=7", method="POST", data=b"abc"
        )
    assert answer.status == 200
    assert answer.body == b"pod-0:3"
    assert answer.headers["X-Pod"] == "pod-0"
    (seen,) = pod.seen
    assert seen.method == "POST"
    assert seen.raw_path == "/items?id=7"
    assert seen.headers["Host"] == "Orders.Shop.svc.cluster.local:8080"
    assert seen.headers["X-Forwarded-For"] == "127.0.0.1"
    assert seen.headers["X-Forwarded-Proto"] == "http"
    assert seen.headers["X-Forwarded-Host"] == "Orders.Shop.svc.cluster.local:8080"
    assert stack.sample("queue_autoscaler_activator_responses_total", code="200") == 1.0
    assert stack.sample("queue_autoscaler_activator_proxy_latency_seconds_count") == 1.0
    assert stack.pokes.targets == []


async def test_an_unknown_host_gets_404_with_a_plain_explanation(stack: Stack) -> None:
    stack.route()
    answer = await stack.send("payments.shop")
    assert answer.status == 404
    assert b"'payments.shop'" in answer.body
    assert b"http-service" in answer.body
    assert (
        stack.registry.get_sample_value(
            "queue_autoscaler_activator_responses_total", {"namespace": "", "deployment": "", "code": "404"}
        )
        == 1.0
    )


async def test_absolute_uri_and_connect_requests_are_refused(stack: Stack) -> None:
    stack.route()
    async with helpers.pods(1) as (pod,):
        stack.activator.endpoints.update(ORDERS, [pod.address])
        for request in [
            f"GET http://127.0.0.1:{pod.port}/ HTTP/1.1\r\nHost: orders.shop\r\n\r\n",
            f"CONNECT 127.0.0.1:{pod.port} HTTP/1.1\r\nHost: orders.shop\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nHost: orders.shop\r\n\r\n",
        ]:
            status, answer = await helpers.raw_exchange(stack.port, request.encode())
            assert status == 400, request
            assert b"not a forward proxy" in answer
    assert pod.seen == []


async def test_hop_by_hop_headers_are_dropped_both_ways(stack: Stack) -> None:
    stack.route()
    async with helpers.pods(1) as (pod,):
        pod.response_headers = {"Connection": "X-Secret", "X-Secret": "1", "Keep-Alive": "timeout=5"}
        stack.activator.endpoints.update(ORDERS, [pod.address])
        answer = await stack.send(
            headers={
                "Connection": "X-Private, keep-alive",
                "X-Private": "p",
                "Keep-Alive": "timeout=1",
                "Proxy-Authorization": "Basic x",
                "TE": "trailers",
                "Trailer": "X-T",
                "Upgrade": "websocket",
                "X-Kept": "k",
            }
        )
    assert answer.status == 200
    (seen,) = pod.seen
    for name in ["X-Private", "Keep-Alive", "Proxy-Authorization", "TE", "Trailer", "Upgrade"]:
        assert name not in seen.headers
    assert seen.headers["X-Kept"] == "k"
    assert "X-Secret" not in answer.headers
    assert "Keep-Alive" not in answer.headers


async def test_a_request_body_over_the_limit_gets_413() -> None:
    async with make_stack(limits=proxy.Limits(max_request_body=10)) as stack, helpers.pods(1) as (pod,):
        stack.route()
        stack.activator.endpoints.update(ORDERS, [pod.address])
        declared = await stack.send(method="POST", data=b"x" * 11)

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(4):
                yield b"xxxx"

        async with stack.client.post(
            f"http://127.0.0.1:{stack.port}/", headers={"Host": "orders.shop"}, data=chunks()
        ) as response:
            streamed = response.status
        fits = await stack.send(method="POST", data=b"x" * 10)
    assert declared.status == 413
    assert streamed == 413
    assert fits.status == 200


async def test_serve_reports_cold_starts_exposes_metrics_and_drains_on_stop() -> None:
    reports: asyncio.Queue[tuple[str, ConcurrencyReport]] = asyncio.Queue()

    async def controller(request: web.Request) -> web.Response:
        await reports.put(
            (request.headers["Authorization"], ConcurrencyReport.from_json(await request.json()))
        )
        return web.Response(status=204)

    controller_app = web.Application()
    controller_app.router.add_post("/concurrency", controller)
    activator = server.Activator(registry=CollectorRegistry())
    listening: asyncio.Future[serving.Listening] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    async with loopback.running(controller_app) as controller_port, helpers.pods(1) as (pod,):
        served = asyncio.create_task(
            serving.serve(
                activator=activator,
                stop=stop,
                host="127.0.0.1",
                port=0,
                admin_host="127.0.0.1",
                admin_port=0,
                controller_url=f"http://127.0.0.1:{controller_port}/concurrency",
                token="t0ken",
                activator_name="activator-7",
                report_interval=3600,
                on_listening=listening.set_result,
            )
        )
        bound = await asyncio.wait_for(listening, 5)
        (proxy_port,), (admin_port,) = bound.proxy_ports, bound.admin_ports
        activator.apply_deployment(
            namespace="shop",
            name="orders",
            annotations={PREFIX + "http-service": "orders", PREFIX + "http-port": "8080"},
        )
        async with aiohttp.ClientSession() as client:
            request = asyncio.create_task(
                client.get(f"http://127.0.0.1:{proxy_port}/", headers={"Host": "orders.shop"})
            )
            authorization, report = await asyncio.wait_for(reports.get(), 5)
            assert authorization == "Bearer t0ken"
            assert report.activator == "activator-7"
            assert report.cold == {ORDERS}
            assert report.targets == {ORDERS: TargetConcurrency(in_flight=0, queued=1, started=1, peak=1)}
            admin = f"http://127.0.0.1:{admin_port}"
            async with client.get(f"{admin}/metrics") as response:
                text = await response.text()
            assert (
                'queue_autoscaler_activator_pending_requests{deployment="orders",namespace="shop"} 1.0'
                in text
            )
            async with client.get(f"{admin}/readyz") as response:
                assert response.status == 200
            activator.endpoints.update(ORDERS, [pod.address])
            async with await request as response:
                assert response.status == 200
        stop.set()
        result = await asyncio.wait_for(served, 10)
    assert result == server.DrainResult(left=0, timed_out=False)
    assert activator.poker is None


async def test_readyz_fails_while_draining(stack: Stack) -> None:
    async with (
        loopback.running(serving.build_admin_app(stack.activator)) as port,
        aiohttp.ClientSession() as client,
    ):
        await stack.activator.drain(timeout=1)
        async with client.get(f"http://127.0.0.1:{port}/readyz") as response:
            assert response.status == 503
        async with client.get(f"http://127.0.0.1:{port}/healthz") as response:
            assert response.status == 200


async def test_invalid_annotations_raise_and_leave_the_route_as_it_was(stack: Stack) -> None:
    before = stack.route()
    with pytest.raises(errors.PolicyError) as caught:
        stack.activator.apply_deployment(
            namespace="shop",
            name="orders",
            annotations={PREFIX + "http-service": "svc", PREFIX + "http-port": "x y"},
        )
    assert [problem.key for problem in caught.value.problems] == ["http-port"]
    assert stack.activator.routes.get(ORDERS) == before


async def test_stop_on_signals_sets_the_event_when_the_signal_arrives() -> None:
    stop = serving.stop_on_signals(signal.SIGUSR1)
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.wait_for(stop.wait(), 5)
    finally:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR1)
