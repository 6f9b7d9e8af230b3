"""Ready endpoint sets, least-outstanding balancing, waking waiters."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from autoscaler.activator import endpoints
from autoscaler.model import TargetKey

T = TargetKey("shop", "orders")
A = endpoints.Address("10.0.0.1", 8080)
B = endpoints.Address("10.0.0.2", 8080)
C = endpoints.Address("10.0.0.3", 8080)


def test_an_address_must_be_an_ip_and_a_port() -> None:
    with pytest.raises(ValueError, match="not an IP"):
        endpoints.Address("orders.shop", 80)
    with pytest.raises(ValueError, match="1-65535"):
        endpoints.Address("10.0.0.1", 0)
    assert str(endpoints.Address("::1", 80)) == "[::1]:80"
    assert endpoints.Address("0:0::1", 80) == endpoints.Address("::1", 80)


def test_no_ready_endpoint_means_no_pick() -> None:
    table = endpoints.Endpoints()
    assert table.pick(T) is None
    table.update(T, [A])
    table.update(T, [])
    assert table.pick(T) is None


def test_ties_are_broken_in_turn() -> None:
    table = endpoints.Endpoints()
    table.update(T, [A, B, C])
    picked = []
    for _ in range(6):
        lease = table.pick(T)
        assert lease is not None
        picked.append(lease.address)
        lease.release()
    assert picked == [A, B, C, A, B, C]


def test_the_address_with_fewest_outstanding_requests_is_picked() -> None:
    table = endpoints.Endpoints()
    table.update(T, [A, B])
    slow = table.pick(T)
    assert slow is not None
    assert slow.address == A
    for _ in range(3):
        quick = table.pick(T)
        assert quick is not None
        assert quick.address == B
        quick.release()
    assert table.outstanding(T) == {A: 1, B: 0}
    held = [table.pick(T) for _ in range(3)]
    assert Counter(lease.address for lease in held if lease is not None) == {A: 1, B: 2}


def test_an_address_that_just_failed_is_picked_again_only_when_it_is_the_only_one() -> None:
    table = endpoints.Endpoints()
    table.update(T, [A, B])
    busy = table.pick(T)  # A: 1 outstanding, B: none
    assert busy is not None
    picked = [table.pick(T, avoid=B) for _ in range(3)]
    assert [lease.address for lease in picked if lease is not None] == [A, A, A]
    table.update(T, [B])
    alone = table.pick(T, avoid=B)
    assert alone is not None
    assert alone.address == B


def test_a_removed_address_is_never_picked_again_and_late_releases_are_harmless() -> None:
    table = endpoints.Endpoints()
    table.update(T, [A, B])
    lease = table.pick(T)
    assert lease is not None
    table.update(T, [B] if lease.address == A else [A])
    survivors = {table.pick(T).address for _ in range(5)}  # type: ignore[union-attr]
    assert lease.address not in survivors
    lease.release()
    lease.release()
    table.update(T, [A, B])
    assert set(table.outstanding(T)) == {A, B}
    assert lease.address in table.outstanding(T)
    assert table.outstanding(T)[lease.address] == 0


async def test_waiters_are_woken_when_the_first_endpoint_appears() -> None:
    table = endpoints.Endpoints()
    waiters = [asyncio.create_task(table.acquire(T)) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    table.update(T, [A, B, C])
    leases = await asyncio.gather(*waiters)
    assert {lease.address for lease in leases} == {A, B, C}


async def test_a_wait_survives_an_update_that_removes_everything() -> None:
    table = endpoints.Endpoints()
    waiter = asyncio.create_task(table.acquire(T))
    await asyncio.sleep(0)
    table.update(T, [])
    await asyncio.sleep(0)
    assert not waiter.done()
    table.update(T, [A])
    lease = await waiter
    assert lease.address == A


async def test_a_cancelled_wait_leaves_nothing_behind() -> None:
    table = endpoints.Endpoints()
    waiter = asyncio.create_task(table.acquire(T))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert table.ready(T) == frozenset()
    assert table._targets == {}


def test_forget_drops_a_target() -> None:
    table = endpoints.Endpoints()
    table.update(T, [A])
    table.forget(T)
    assert table.ready(T) == frozenset()
    assert table.pick(T) is None
