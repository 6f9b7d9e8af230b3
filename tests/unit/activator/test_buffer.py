"""The bounded gate on its own: queue bound, timeout, close, counts."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from autoscaler import errors
from autoscaler.activator import buffer, endpoints, routing
from autoscaler.model import TargetConcurrency, TargetKey

T = TargetKey("shop", "orders")
A = endpoints.Address("10.0.0.1", 8080)


def make(max_in_flight: int = 100) -> tuple[buffer.Buffer, endpoints.Endpoints, list[TargetKey]]:
    table = endpoints.Endpoints()
    ticks = itertools.count()
    gate = buffer.Buffer(endpoints=table, max_in_flight=max_in_flight, clock=lambda: float(next(ticks)))
    return gate, table, []


def route(*, max_pending: int = 10, timeout: float = 60.0) -> routing.Route:
    return routing.Route(
        target=T,
        service="orders",
        port=80,
        max_pending=max_pending,
        activation_timeout=timeout,
    )


async def test_a_ready_endpoint_is_leased_without_queueing() -> None:
    gate, table, cold = make()
    table.update(T, [A])
    with gate.hold(T) as ticket:
        grant = await gate.lease(ticket, route(), on_cold=cold.append)
        assert grant.waited is None
        assert grant.lease.address == A
        assert gate.concurrency() == {T: TargetConcurrency(in_flight=1, queued=0)}
    assert cold == []
    assert gate.concurrency() == {}
    assert gate.held == 0


async def test_queued_requests_count_as_queued_and_the_first_one_is_cold() -> None:
    gate, table, cold = make()

    async def one() -> float | None:
        with gate.hold(T) as ticket:
            grant = await gate.lease(ticket, route(), on_cold=cold.append)
            grant.lease.release()
            return grant.waited

    waiting = [asyncio.create_task(one()) for _ in range(3)]
    await asyncio.sleep(0)
    assert gate.concurrency() == {T: TargetConcurrency(in_flight=0, queued=3)}
    assert gate.cold() == {T}
    assert cold == [T]
    table.update(T, [A])
    waited = await asyncio.gather(*waiting)
    assert all(w is not None and w > 0 for w in waited)
    assert gate.concurrency() == {}


async def test_a_full_queue_refuses_and_a_timeout_expires() -> None:
    gate, _, cold = make()
    with gate.hold(T) as first, gate.hold(T) as second:
        task = asyncio.create_task(gate.lease(first, route(max_pending=1, timeout=0.01), on_cold=cold.append))
        await asyncio.sleep(0)
        with pytest.raises(errors.QueueFull):
            await gate.lease(second, route(max_pending=1), on_cold=cold.append)
        with pytest.raises(errors.ActivationTimeout):
            await task


async def test_max_pending_zero_refuses_but_still_reports_the_cold_target() -> None:
    gate, _, cold = make()
    with gate.hold(T) as ticket, pytest.raises(errors.QueueFull):
        await gate.lease(ticket, route(max_pending=0), on_cold=cold.append)
    assert cold == [T]


async def test_the_in_flight_bound_refuses_more_holds() -> None:
    gate, _, _ = make(max_in_flight=2)
    with gate.hold(T), gate.hold(T), pytest.raises(buffer.Overloaded), gate.hold(T):
        pass
    assert gate.held == 0


async def test_closing_a_target_ends_its_waits_with_the_reason() -> None:
    gate, _, cold = make()
    with gate.hold(T) as ticket:
        task = asyncio.create_task(gate.lease(ticket, route(), on_cold=cold.append))
        await asyncio.sleep(0)
        gate.close(T, "gone")
        with pytest.raises(buffer.Closed, match="gone"):
            await task
        with pytest.raises(buffer.Closed):
            await gate.lease(ticket, route(), on_cold=cold.append)


async def test_close_all_ends_every_wait_and_refuses_new_ones() -> None:
    gate, table, cold = make()
    other = TargetKey("shop", "payments")
    with gate.hold(T) as first, gate.hold(other) as second:
        tasks = [
            asyncio.create_task(gate.lease(first, route(), on_cold=cold.append)),
            asyncio.create_task(gate.lease(second, routing.Route(other, "p", 80), on_cold=cold.append)),
        ]
        await asyncio.sleep(0)
        gate.close_all("stopping")
        await gate.wait_unqueued()
        for task in tasks:
            with pytest.raises(buffer.Closed, match="stopping"):
                await task
        table.update(T, [A])
        with pytest.raises(buffer.Closed):
            await gate.lease(first, route(), on_cold=cold.append)


async def test_wait_idle_returns_when_the_last_request_is_done() -> None:
    gate, _, _ = make()
    with gate.hold(T):
        idle = asyncio.create_task(gate.wait_idle())
        await asyncio.sleep(0)
        assert not idle.done()
    await idle


def test_a_report_window_counts_the_requests_that_started_and_ended_within_it() -> None:
    gate, _, _ = make()
    with gate.hold(T), gate.hold(T):
        pass
    with gate.hold(T):
        pass

    assert gate.concurrency() == {}  # nothing held at this instant
    assert gate.take_window() == {T: (3, 2)}  # but 3 requests started, 2 at once at the peak
    assert gate.take_window() == {}  # the window ended with the previous call
