"""Requests held while a target has no ready endpoint: bounds, timeouts, waking, spreading, draining."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter

import pytest
import structlog
from aiohttp import web

from autoscaler.activator import buffer, endpoints
from autoscaler.model import TargetConcurrency, TargetKey
from autoscaler.observability.log_events import ActivatorLog
from tests.unit.activator import helpers
from tests.unit.activator.conftest import ORDERS, Answer, Stack, make_stack


async def test_overflow_gets_exactly_the_overflow_count_of_503s(stack: Stack) -> None:
    stack.route(max_pending="5")
    async with helpers.pods(1) as (pod,):
        sent = [asyncio.create_task(stack.send(path=f"/{i}")) for i in range(8)]
        await helpers.eventually(lambda: sum(task.done() for task in sent) == 3)
        assert stack.activator.buffer.queued(ORDERS) == 5
        refused = [task.result() for task in sent if task.done()]
        assert [answer.status for answer in refused] == [503] * 3
        assert all(answer.headers["Retry-After"] == "1" for answer in refused)
        assert all(b"queue full" in answer.body for answer in refused)
        stack.activator.endpoints.update(ORDERS, [pod.address])
        answers = await asyncio.gather(*sent)
    assert len(answers) == 8
    assert Counter(answer.status for answer in answers) == {200: 5, 503: 3}
    assert len(pod.seen) == 5
    assert stack.sample("queue_autoscaler_activator_responses_total", code="503") == 3.0
    assert stack.sample("queue_autoscaler_activator_cold_starts_total") == 1.0
    assert stack.sample("queue_autoscaler_activator_cold_start_wait_seconds_count") == 5.0


async def test_a_request_waiting_past_activation_timeout_gets_504(stack: Stack) -> None:
    stack.route(activation_timeout="50ms")
    answer = await stack.send()
    assert answer.status == 504
    assert b"activation timeout" in answer.body
    assert stack.activator.buffer.held == 0
    assert stack.sample("queue_autoscaler_activator_pending_requests") == 0.0


async def test_the_first_request_at_zero_pokes_the_reporter_and_is_reported_cold(stack: Stack) -> None:
    stack.route()
    async with helpers.pods(1) as (pod,):
        with structlog.testing.capture_logs() as logs:
            sent = [asyncio.create_task(stack.send()) for _ in range(3)]
            await helpers.eventually(lambda: stack.activator.buffer.queued(ORDERS) == 3)
        # Every queued request pokes (the reporter coalesces them); the cold start is counted once.
        assert stack.pokes.targets == [ORDERS] * 3
        assert stack.activator.cold() == {ORDERS}
        assert stack.activator.concurrency() == {
            ORDERS: TargetConcurrency(in_flight=0, queued=3, started=3, peak=3)
        }
        assert stack.sample("queue_autoscaler_activator_pending_requests") == 3.0
        cold_logs = [entry for entry in logs if entry["event"] == ActivatorLog.COLD_START_BEGAN]
        assert len(cold_logs) == 1
        assert cold_logs[0]["namespace"] == "shop"
        assert cold_logs[0]["deployment"] == "orders"
        pod.release.clear()
        stack.activator.endpoints.update(ORDERS, [pod.address])
        await helpers.eventually(lambda: len(pod.seen) == 3)
        assert stack.activator.concurrency() == {ORDERS: TargetConcurrency(in_flight=3, queued=0, peak=3)}
        assert stack.activator.cold() == frozenset()
        pod.release.set()
        assert [answer.status for answer in await asyncio.gather(*sent)] == [200] * 3
    assert stack.activator.concurrency() == {ORDERS: TargetConcurrency(in_flight=0, queued=0)}


async def test_buffered_requests_are_spread_over_the_endpoints_that_turn_ready(stack: Stack) -> None:
    stack.route()
    async with helpers.pods(3) as pods:
        for pod in pods:
            pod.release.clear()
        sent = [asyncio.create_task(stack.send(path=f"/{i}")) for i in range(30)]
        await helpers.eventually(lambda: stack.activator.buffer.queued(ORDERS) == 30)
        stack.activator.endpoints.update(ORDERS, [pod.address for pod in pods])
        await helpers.eventually(lambda: sum(len(pod.seen) for pod in pods) == 30)
        assert [len(pod.seen) for pod in pods] == [10, 10, 10]
        for pod in pods:
            pod.release.set()
        answers = await asyncio.gather(*sent)
    assert Counter(answer.status for answer in answers) == {200: 30}
    assert Counter(answer.headers["X-Pod"] for answer in answers) == {"pod-0": 10, "pod-1": 10, "pod-2": 10}


async def test_requests_go_to_the_least_busy_endpoint(stack: Stack) -> None:
    stack.route()
    async with helpers.pods(2) as pods:
        for pod in pods:
            pod.release.clear()
        stack.activator.endpoints.update(ORDERS, [pod.address for pod in pods])
        stuck = asyncio.create_task(stack.send())
        await helpers.eventually(lambda: sum(len(pod.seen) for pod in pods) == 1)
        busy, idle = sorted(pods, key=lambda pod: -len(pod.seen))
        idle.release.set()
        quick = [await stack.send() for _ in range(5)]
        assert {answer.headers["X-Pod"] for answer in quick} == {idle.name}
        busy.release.set()
        assert (await stuck).status == 200


async def test_an_endpoint_removed_from_the_ready_set_gets_no_more_requests(stack: Stack) -> None:
    stack.route()
    async with helpers.pods(2) as (leaving, staying):
        stack.activator.endpoints.update(ORDERS, [leaving.address, staying.address])
        await stack.send()
        await stack.send()
        assert len(leaving.seen) == len(staying.seen) == 1
        stack.activator.endpoints.update(ORDERS, [staying.address])
        answers = [await stack.send() for _ in range(4)]
    assert {answer.headers["X-Pod"] for answer in answers} == {"pod-1"}
    assert len(leaving.seen) == 1


async def test_a_refused_connection_is_retried_once_on_a_ready_endpoint(stack: Stack) -> None:
    stack.route()
    async with helpers.pods(1) as (pod,):
        refusing = endpoints.Address("127.0.0.1", helpers.closed_port())
        stack.activator.endpoints.update(ORDERS, [refusing, pod.address])
        with structlog.testing.capture_logs() as logs:
            answers = [await stack.send() for _ in range(4)]
        assert [answer.status for answer in answers] == [200] * 4
        retries = [entry for entry in logs if entry["event"] == ActivatorLog.UPSTREAM_RETRIED]
        assert retries
        assert all(entry["deployment"] == "orders" for entry in retries)
        stack.activator.endpoints.update(ORDERS, [refusing])
        failed = await stack.send()
    assert failed.status == 502
    assert b"upstream failed" in failed.body


async def test_a_refused_connection_is_retried_on_another_endpoint_even_a_busier_one(stack: Stack) -> None:
    stack.route()
    async with helpers.pods(1) as (pod,):
        refusing = endpoints.Address("127.0.0.1", helpers.closed_port())
        stack.activator.endpoints.update(ORDERS, [refusing, pod.address])
        pod.release.clear()
        # Two requests held by the pod: it has more outstanding than the refusing address from now on.
        held = [asyncio.create_task(stack.send()) for _ in range(2)]
        await helpers.eventually(lambda: len(pod.seen) == 2)
        retried = asyncio.create_task(stack.send())
        await helpers.eventually(lambda: len(pod.seen) == 3)
        pod.release.set()
        answers = [*await asyncio.gather(*held), await retried]
    assert [answer.status for answer in answers] == [200] * 3


async def test_a_retried_request_carries_its_whole_body_to_the_second_endpoint(stack: Stack) -> None:
    stack.route()
    async with helpers.pods(1) as (pod,):
        refusing = endpoints.Address("127.0.0.1", helpers.closed_port())
        stack.activator.endpoints.update(ORDERS, [refusing, pod.address])
        answers = [await stack.send(method="POST", data=b"x" * 1000) for _ in range(4)]
    assert [(answer.status, answer.body) for answer in answers] == [(200, b"pod-0:1000")] * 4
    assert [len(seen.body) for seen in pod.seen] == [1000] * 4


async def test_the_in_flight_bound_refuses_with_503() -> None:
    async with make_stack(max_in_flight=2) as stack, helpers.pods(1) as (pod,):
        stack.route()
        pod.release.clear()
        stack.activator.endpoints.update(ORDERS, [pod.address])
        held = [asyncio.create_task(stack.send()) for _ in range(2)]
        await helpers.eventually(lambda: len(pod.seen) == 2)
        refused = await stack.send()
        pod.release.set()
        answers = await asyncio.gather(*held)
    assert refused.status == 503
    assert refused.headers["Retry-After"] == "1"
    assert b"overloaded" in refused.body
    assert [answer.status for answer in answers] == [200, 200]


async def test_drain_waits_for_buffered_requests_which_are_all_answered(stack: Stack) -> None:
    stack.route()
    async with helpers.pods(2) as pods:
        sent = [asyncio.create_task(stack.send(path=f"/{i}")) for i in range(6)]
        await helpers.eventually(lambda: stack.activator.buffer.queued(ORDERS) == 6)
        drain = asyncio.create_task(stack.activator.drain(timeout=30))
        await helpers.eventually(lambda: stack.activator.draining)
        late = await stack.send()
        assert late.status == 503
        assert b"shutting down" in late.body
        assert not drain.done()
        stack.activator.endpoints.update(ORDERS, [pod.address for pod in pods])
        answers = await asyncio.gather(*sent)
        result = await drain
    assert [answer.status for answer in answers] == [200] * 6
    assert result.left == 0
    assert not result.timed_out


async def test_drain_past_its_timeout_answers_the_still_buffered_requests_503(stack: Stack) -> None:
    stack.route()
    sent = [asyncio.create_task(stack.send()) for _ in range(4)]
    await helpers.eventually(lambda: stack.activator.buffer.queued(ORDERS) == 4)
    result = await stack.activator.drain(timeout=0.01)
    answers: list[Answer] = await asyncio.gather(*sent)
    assert result.timed_out
    assert [answer.status for answer in answers] == [503] * 4
    assert all(b"shutting down" in answer.body for answer in answers)


async def test_removing_a_target_answers_its_queued_requests_and_drops_its_series(stack: Stack) -> None:
    stack.route()
    sent = asyncio.create_task(stack.send())
    await helpers.eventually(lambda: stack.activator.buffer.queued(ORDERS) == 1)
    assert stack.sample("queue_autoscaler_activator_pending_requests") == 1.0
    stack.activator.apply_deployment(namespace="shop", name="orders", annotations={})
    answer = await sent
    assert answer.status == 503
    assert b"no longer routed" in answer.body
    for name in [
        "queue_autoscaler_activator_pending_requests",
        "queue_autoscaler_activator_in_flight_requests",
        "queue_autoscaler_activator_cold_starts_total",
    ]:
        assert stack.sample(name) is None
    assert stack.sample("queue_autoscaler_activator_responses_total", code="503") is None
    assert stack.activator.concurrency() == {}
    assert (await stack.send()).status == 404


async def test_targets_are_independent(stack: Stack) -> None:
    payments = TargetKey("shop", "payments")
    stack.route(max_pending="1")
    stack.route(payments)
    async with helpers.pods(1) as (pod,):
        stack.activator.endpoints.update(payments, [pod.address])
        waiting = asyncio.create_task(stack.send())
        await helpers.eventually(lambda: stack.activator.buffer.queued(ORDERS) == 1)
        assert (await stack.send("payments.shop")).status == 200
        assert (await stack.send()).status == 503
        stack.activator.endpoints.update(ORDERS, [pod.address])
        assert (await waiting).status == 200


async def test_a_pod_that_starts_listening_during_the_backoff_gets_the_retried_request() -> None:
    pod = helpers.Pod(name="late")
    runner = web.AppRunner(pod.app())
    await runner.setup()
    bound = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    bound.bind(("127.0.0.1", 0))
    pod.port = bound.getsockname()[1]
    backoffs: list[float] = []

    async def start_listening(seconds: float) -> None:
        backoffs.append(seconds)
        await web.SockSite(runner, bound).start()

    try:
        async with make_stack(retry_backoff=0.25, retry_sleep=start_listening) as stack:
            stack.route()
            stack.activator.endpoints.update(ORDERS, [pod.address])
            answer = await stack.send()
    finally:
        await runner.cleanup()
        bound.close()
    assert answer.status == 200
    assert answer.headers["X-Pod"] == "late"
    assert backoffs == [0.25]


async def test_a_client_that_gives_up_while_queued_frees_its_place(stack: Stack) -> None:
    stack.route(max_pending="1")
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: orders.shop\r\n\r\n")
    await writer.drain()
    await helpers.eventually(lambda: stack.activator.buffer.queued(ORDERS) == 1)
    writer.close()
    await writer.wait_closed()
    await helpers.eventually(lambda: stack.activator.buffer.held == 0)
    async with helpers.pods(1) as (pod,):
        waiting = asyncio.create_task(stack.send())
        await helpers.eventually(lambda: stack.activator.buffer.queued(ORDERS) == 1)
        stack.activator.endpoints.update(ORDERS, [pod.address])
        assert (await waiting).status == 200
    del reader


async def test_while_a_target_wakes_each_endpoint_that_turns_ready_takes_at_most_its_share(
    stack: Stack,
) -> None:
    stack.route(concurrency_per_replica="10")
    async with helpers.pods(3) as pods:
        for pod in pods:
            pod.release.clear()
        sent = [asyncio.create_task(stack.send(path=f"/{i}")) for i in range(30)]
        await helpers.eventually(lambda: stack.activator.buffer.queued(ORDERS) == 30)
        ready: list[helpers.Pod] = []
        for pod in pods:  # endpoints turn ready one at a time, as pods of a waking Deployment do
            ready.append(pod)
            stack.activator.endpoints.update(ORDERS, [p.address for p in ready])
            await helpers.eventually(lambda: sum(len(p.seen) for p in ready) == 10 * len(ready))
            assert [len(p.seen) for p in ready] == [10] * len(ready)
        for pod in pods:
            pod.release.set()
        answers = await asyncio.gather(*sent)
    assert Counter(answer.status for answer in answers) == {200: 30}


async def test_requests_beyond_the_share_spill_to_the_ready_endpoint_when_no_other_comes(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(buffer, "WAKE_SPILL_AFTER", 0.05)
    stack.route(concurrency_per_replica="10")
    async with helpers.pods(1) as (pod,):
        pod.release.clear()
        sent = [asyncio.create_task(stack.send(path=f"/{i}")) for i in range(25)]
        await helpers.eventually(lambda: stack.activator.buffer.queued(ORDERS) == 25)
        stack.activator.endpoints.update(ORDERS, [pod.address])
        await helpers.eventually(lambda: len(pod.seen) == 25)
        pod.release.set()
        answers = await asyncio.gather(*sent)
    assert Counter(answer.status for answer in answers) == {200: 25}


async def test_a_target_at_max_replicas_gets_no_wake_up_share(stack: Stack) -> None:
    stack.route(concurrency_per_replica="10", max_replicas="1")
    async with helpers.pods(1) as (pod,):
        pod.release.clear()
        sent = [asyncio.create_task(stack.send(path=f"/{i}")) for i in range(25)]
        await helpers.eventually(lambda: stack.activator.buffer.queued(ORDERS) == 25)
        stack.activator.endpoints.update(ORDERS, [pod.address])
        await helpers.eventually(lambda: len(pod.seen) == 25)  # no wait: no second endpoint can come
        pod.release.set()
        answers = await asyncio.gather(*sent)
    assert Counter(answer.status for answer in answers) == {200: 25}


async def test_a_cold_request_refused_by_a_full_queue_still_wakes_the_target(stack: Stack) -> None:
    stack.route(max_pending="1", activation_timeout="500ms")
    first = asyncio.create_task(stack.send())
    await helpers.eventually(lambda: stack.activator.buffer.queued(ORDERS) == 1)
    answer = await stack.send()
    assert answer.status == 503
    assert stack.pokes.targets == [ORDERS, ORDERS]
    assert (await first).status == 504
