"""Delivery guarantees of the dispatcher under load and faults, on the devstack's Kafka and API server.

Event ids are compared (every matching id delivered at least once, no other); duplicates are counted and
printed (``-s``), as are timings; only outcomes and orders are asserted.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence

import aiohttp
import pytest

from autoscaler.eventing.delivery import Delivery, backoff
from autoscaler.model import trigger_consumer_group
from autoscaler.observability.log_events import EventingLog
from devstack.eventing_harness import BILLING, Broker, committed, subscriber
from tests.controller import Process
from tests.integration.test_eventing_broker import broker, kustomize, new_id, rest
from tests.stack import eventually

__all__ = ["broker", "kustomize", "rest"]  # fixtures

pytestmark = pytest.mark.devstack


async def post_all(broker: Broker, events: Sequence[tuple[str, str]], *, connections: int = 32) -> None:
    """Posts (id, type) events over ``connections`` concurrent connections; every one must get 202."""
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    for event in events:
        queue.put_nowait(event)
    refused: list[int] = []

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            event_id, event_type = queue.get_nowait()
            headers = {
                "ce-specversion": "1.0",
                "ce-id": event_id,
                "ce-source": "/load",
                "ce-type": event_type,
            }
            async with session.post(broker.url, headers=headers, data=b"{}") as response:
                if response.status != 202:
                    refused.append(response.status)

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(connections)))
    assert refused == []


def delivered(ids: Sequence[str]) -> asyncio.Future[set[str]]:
    future: asyncio.Future[set[str]] = asyncio.get_running_loop().create_future()
    future.set_result(set(ids))
    return future


async def test_ten_thousand_events_of_three_types_reach_exactly_the_triggers_whose_filters_match(
    broker: Broker,
) -> None:
    types = ("com.example.order.created", "com.example.order.paid", "com.example.invoice.sent")
    async with subscriber() as orders, subscriber() as invoices_and_paid:
        await broker.trigger(
            "created", {"filter": {"attributes": {"type": types[0]}}, "subscriber": {"uri": orders.url}}
        )
        await broker.trigger(
            "paid-or-invoiced",
            {
                "filters": [
                    {"any": [{"suffix": {"type": ".paid"}}, {"prefix": {"type": "com.example.invoice."}}]}
                ],
                "subscriber": {"uri": invoices_and_paid.url},
            },
        )
        await broker.ready_trigger("created")
        await broker.ready_trigger("paid-or-invoiced")
        events = [(new_id(), types[i % 3]) for i in range(10_000)]
        loop = asyncio.get_running_loop()
        started = loop.time()
        await post_all(broker, events)
        posted = loop.time() - started
        want_created = {i for i, t in events if t == types[0]}
        want_other = {i for i, t in events if t != types[0]}
        await eventually(
            lambda: delivered(orders.ids()),
            lambda ids: ids >= want_created,
            timeout=180,
            interval=0.5,
            what="every order.created event",
        )
        await eventually(
            lambda: delivered(invoices_and_paid.ids()),
            lambda ids: ids >= want_other,
            timeout=180,
            interval=0.5,
            what="every order.paid and invoice.sent event",
        )
        done = loop.time() - started
    assert set(orders.ids()) == want_created
    assert set(invoices_and_paid.ids()) == want_other
    duplicates = (len(orders.ids()) - len(want_created)) + (len(invoices_and_paid.ids()) - len(want_other))
    print(
        f"\n10,000 events posted in {posted:.1f} s ({10_000 / posted:.0f}/s over 32 connections); "
        f"all delivered after {done:.1f} s; duplicates: {duplicates}"
    )


async def test_a_subscriber_failing_a_fifth_of_attempts_gets_every_event_after_retries(
    broker: Broker,
) -> None:
    rng = random.Random(7)
    async with subscriber() as sink:
        sink.answer = lambda _r: ((500 if rng.random() < 0.2 else 200), b"", {})
        delivery = {"retry": 10, "backoffPolicy": "exponential", "backoffDelay": "PT0.01S"}
        await broker.trigger("flaky", {"subscriber": {"uri": sink.url}, "delivery": delivery})
        await broker.ready_trigger("flaky")
        events = [(new_id(), BILLING) for _ in range(300)]
        await post_all(broker, events)

        await eventually(
            lambda: asyncio.sleep(0, len(sink.received)),
            lambda n: n >= 300,
            timeout=60,
            what="first attempts",
        )
        await eventually(
            lambda: committed(
                broker.devstack.kafka_bootstrap, trigger_consumer_group(broker.namespace, "flaky")
            ),
            lambda offsets: sum(offsets.values()) == 300,
            timeout=120,
            interval=0.5,
            what="every record finished and committed",
        )
    attempts = Counter(sink.ids())
    assert set(attempts) == {i for i, _ in events}
    print(f"\n{sum(attempts.values())} attempts for 300 events; most for one: {max(attempts.values())}")
    # The retry schedule as the subscriber saw it: each gap between attempts against delay x 2^n. Reported,
    # not asserted: the arrival times are taken on this test's busy event loop.
    times: dict[str, list[float]] = {}
    for got in sink.received:
        times.setdefault(got.id, []).append(got.at)
    policy = Delivery(retry=10, backoff_policy="exponential", backoff_delay=0.01)
    late = sorted(
        (gap - backoff(policy, n)) * 1000
        for at in times.values()
        for n, gap in enumerate((b - a for a, b in itertools.pairwise(at)), start=1)
    )
    if late:
        print(
            f"retry gaps minus the formula over {len(late)} retries: min {late[0]:+.1f} ms, "
            f"median {late[len(late) // 2]:+.1f} ms, p99 {late[int(len(late) * 0.99)]:+.1f} ms, "
            f"max {late[-1]:+.1f} ms"
        )
    assert broker.dispatcher.logged(EventingLog.DELIVERY_FAILED) == []  # none ran out of retries


async def test_with_the_dead_letter_sink_down_nothing_is_committed_past_the_event_until_it_returns(
    broker: Broker,
) -> None:
    sink_up = False
    async with subscriber() as sink, subscriber() as dead_letters:
        sink.answer = lambda _r: (400, b"no", {})
        dead_letters.answer = lambda _r: ((202 if sink_up else 503), b"", {})
        delivery = {"retry": 1, "backoffDelay": "PT0.05S", "deadLetterSink": {"uri": dead_letters.url}}
        await broker.trigger("dlq", {"subscriber": {"uri": sink.url}, "delivery": delivery})
        await broker.ready_trigger("dlq")
        group = trigger_consumer_group(broker.namespace, "dlq")
        event_id = new_id()
        assert await broker.post(event_id, BILLING) == 202
        await eventually(
            lambda: asyncio.sleep(0, len(dead_letters.received)),
            lambda n: n >= 3,
            timeout=60,
            what="the dead-letter sink to refuse three times",
        )
        # The dispatcher commits every second: three refusals later, the record is still uncommitted.
        assert sum((await committed(broker.devstack.kafka_bootstrap, group)).values()) == 0
        sink_up = True
        await eventually(
            lambda: committed(broker.devstack.kafka_bootstrap, group),
            lambda offsets: sum(offsets.values()) == 1,
            timeout=60,
            interval=0.2,
            what="the record committed once the dead-letter sink took it",
        )
    assert dead_letters.ids()[-1] == event_id
    assert set(dead_letters.ids()) == {event_id}


async def fast_beside_slow(
    broker: Broker,
    *,
    events: int,
    slow_delay: float,
    when_ready: Callable[[], Awaitable[None]] | None = None,
) -> int:
    """Two Triggers taking every event, one subscriber answering after ``slow_delay`` seconds: posts
    ``events`` events, waits until the fast Trigger delivered every one, and returns how many the slow
    subscriber had received by then. ``when_ready`` runs once both Triggers are Ready, before posting."""
    async with subscriber() as slow, subscriber() as fast:
        slow.delay = slow_delay
        await broker.trigger("slow", {"subscriber": {"uri": slow.url}})
        await broker.trigger("fast", {"subscriber": {"uri": fast.url}})
        await broker.ready_trigger("slow")
        await broker.ready_trigger("fast")
        if when_ready is not None:
            await when_ready()
        posted = [(new_id(), BILLING) for _ in range(events)]
        await post_all(broker, posted)
        await eventually(
            lambda: delivered(fast.ids()),
            lambda ids: ids == {i for i, _ in posted},
            timeout=60,
            interval=0.1,
            what="the fast Trigger's deliveries",
        )
        return len(slow.received)


async def test_a_slow_unordered_trigger_does_not_delay_another_triggers_deliveries(broker: Broker) -> None:
    slow_so_far = await fast_beside_slow(broker, events=300, slow_delay=2.0)
    # The slow subscriber answers one event per 2 s per connection: it cannot have finished them all.
    assert slow_so_far < 300
    print(f"\nfast Trigger delivered 300 while the slow one had answered {slow_so_far}")


async def test_ordered_delivery_keeps_each_partitions_order_under_retries(broker: Broker) -> None:
    rng = random.Random(3)
    async with subscriber() as sink:
        sink.answer = lambda _r: ((503 if rng.random() < 0.3 else 200), b"", {})
        delivery = {"retry": 20, "backoffPolicy": "linear", "backoffDelay": "PT0.01S"}
        await broker.trigger(
            "ordered",
            {"subscriber": {"uri": sink.url}, "delivery": delivery},
            annotations={"kafka.eventing.knative.dev/delivery.order": "ordered"},
        )
        await broker.ready_trigger("ordered")
        keys = ["customer-1", "customer-2", "customer-3"]
        sequence = [(f"{key}-{n:03d}", key) for n in range(40) for key in keys]
        async with aiohttp.ClientSession() as session:
            for event_id, key in sequence:  # one at a time: the ingress order is the order in each partition
                headers = {
                    "ce-specversion": "1.0",
                    "ce-id": event_id,
                    "ce-source": "/o",
                    "ce-type": BILLING,
                    "ce-partitionkey": key,
                }
                async with session.post(broker.url, headers=headers, data=b"{}") as response:
                    assert response.status == 202
        await eventually(
            lambda: delivered(sink.ids()),
            lambda ids: ids >= {i for i, _ in sequence},
            timeout=120,
            interval=0.2,
            what="every event",
        )
    # Per key (one partition), an event's first attempt comes after the last attempt of the event before it.
    first_attempt: dict[str, int] = {}
    last_attempt: dict[str, int] = {}
    for index, received in enumerate(sink.received):
        first_attempt.setdefault(received.id, index)
        last_attempt[received.id] = index
    retried = sum(1 for i in first_attempt if first_attempt[i] != last_attempt[i])
    for key in keys:
        ids = [i for i, k in sequence if k == key]
        overtaken = [(a, b) for a, b in itertools.pairwise(ids) if first_attempt[b] < last_attempt[a]]
        assert overtaken == [], key
    print(f"\n{retried} of {len(sequence)} events needed retries; every key's order kept")


async def test_a_killed_dispatcher_delivers_every_event_after_its_restart(broker: Broker) -> None:
    async with subscriber() as sink:
        sink.delay = 0.01
        await broker.trigger("survivor", {"subscriber": {"uri": sink.url}})
        await broker.ready_trigger("survivor")
        events = [(new_id(), BILLING) for _ in range(2000)]
        await post_all(broker, events)
        await eventually(
            lambda: asyncio.sleep(0, len(sink.received)),
            lambda n: n >= 300,
            timeout=60,
            what="some deliveries",
        )
        broker.dispatcher.kill()
        at_kill = len(set(sink.ids()))
        restarted = Process(
            broker.dispatcher.argv,
            broker.dispatcher.log_path.with_name("restarted.log"),
            broker.dispatcher.env,
        ).start()
        try:
            await eventually(
                lambda: delivered(sink.ids()),
                lambda ids: ids >= {i for i, _ in events},
                timeout=120,
                interval=0.2,
                what="every event after the restart",
            )
        finally:
            restarted.stop()
    duplicates = len(sink.ids()) - len(set(sink.ids()))
    assert set(sink.ids()) == {i for i, _ in events}
    print(f"\nkilled after {at_kill} of 2000 delivered; all delivered after restart; {duplicates} duplicates")
