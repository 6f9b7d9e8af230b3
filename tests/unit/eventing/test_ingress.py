"""The broker ingress's answers, with the Kafka sink and the Broker list behind their Protocols."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from autoscaler.errors import KafkaUnavailable
from autoscaler.eventing import events, ingress
from devstack.loopback import running
from tests.stack import eventually

BINARY = {
    "ce-specversion": "1.0",
    "ce-id": "e-1",
    "ce-source": "/billing",
    "ce-type": "com.shivamitcs.billing.started",
    "ce-partitionkey": "customer-7",
    "Content-Type": "application/json",
}


class KnownBrokers:
    def topic(self, namespace: str, name: str) -> str | None:
        return f"knative-broker-{namespace}-{name}" if (namespace, name) == ("shop", "default") else None


class RecordingSink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, events.Record]] = []
        self.down = False
        self.gate: asyncio.Event | None = None
        self.waiting = 0

    async def send(self, *, topic: str, record: events.Record) -> None:
        if self.gate is not None:
            self.waiting += 1
            await self.gate.wait()
        if self.down:
            raise KafkaUnavailable("producing: Kafka is unavailable: connection refused")
        self.sent.append((topic, record))


class CreatedTopics:
    def __init__(self) -> None:
        self.ensured: list[str] = []

    async def ensure(self, topic: str) -> None:
        self.ensured.append(topic)


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def url(sink: RecordingSink, registry: CollectorRegistry) -> AsyncIterator[str]:
    front = ingress.Ingress(
        brokers=KnownBrokers(),
        sink=sink,
        topics=CreatedTopics(),
        metrics=ingress.IngressMetrics(registry),
        settings=ingress.IngressSettings(max_body_bytes=1000, max_in_flight=2),
    )
    async with running(front.build_app()) as port:
        yield f"http://127.0.0.1:{port}"


async def post(
    url: str, path: str, *, headers: dict[str, str], body: bytes, method: str = "POST"
) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url + path, headers=headers, data=body) as response,
    ):
        return response.status, await response.text()


async def test_a_binary_event_is_stored_in_kafka_binary_mode_keyed_by_its_partitionkey_then_202(
    url: str, sink: RecordingSink, registry: CollectorRegistry
) -> None:
    status, _ = await post(url, "/shop/default", headers=BINARY, body=b'{"amount": 12}')
    assert status == 202
    ((topic, record),) = sink.sent
    assert topic == "knative-broker-shop-default"
    assert record.key == b"customer-7"
    assert record.value == b'{"amount": 12}'
    assert dict(record.headers) == {
        "ce_specversion": b"1.0",
        "ce_id": b"e-1",
        "ce_source": b"/billing",
        "ce_type": b"com.shivamitcs.billing.started",
        "ce_partitionkey": b"customer-7",
        "content-type": b"application/json",
        "ce_knativebrokerttl": b"255",
    }
    accepted = registry.get_sample_value(
        "queue_autoscaler_broker_events_accepted_total", {"namespace": "shop", "broker": "default"}
    )
    assert accepted == 1.0


async def test_a_structured_event_becomes_the_same_binary_mode_record(url: str, sink: RecordingSink) -> None:
    event = {
        "specversion": "1.0",
        "id": "e-2",
        "source": "/billing",
        "type": "com.shivamitcs.billing.started",
        "tenant": "acme",
        "data": {"amount": 12},
    }
    status, _ = await post(
        url, "/shop/default", headers={"Content-Type": events.STRUCTURED}, body=json.dumps(event).encode()
    )
    assert status == 202
    ((_, record),) = sink.sent
    assert record.key is None
    assert json.loads(record.value) == {"amount": 12}
    assert record.attributes() == {
        "specversion": "1.0",
        "id": "e-2",
        "source": "/billing",
        "type": "com.shivamitcs.billing.started",
        "tenant": "acme",
        "datacontenttype": "application/json",
        "knativebrokerttl": "255",
    }


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        ({k: v for k, v in BINARY.items() if k != "ce-id"}, b"{}", "missing ce-id"),
        ({"Content-Type": events.STRUCTURED}, b"not json", "not UTF-8 JSON"),
        ({"Content-Type": events.STRUCTURED}, b'{"specversion": "1.0", "source": "/s", "type": "t"}', "'id'"),
        ({"Content-Type": events.BATCH}, b"[]", "batch mode is not supported"),
        ({**BINARY, "ce-time": "yesterday"}, b"{}", "ce-time is not an RFC 3339 time"),
        ({**BINARY, "ce-knativebrokerttl": "0"}, b"{}", "looped through the broker"),
    ],
)
async def test_an_invalid_event_gets_400_with_the_reason_and_nothing_is_stored(
    url: str, sink: RecordingSink, headers: dict[str, str], body: bytes, reason: str
) -> None:
    status, text = await post(url, "/shop/default", headers=headers, body=body)
    assert (status, reason in text) == (400, True), text
    assert sink.sent == []


async def test_unknown_brokers_get_404_other_methods_405_and_big_bodies_413(
    url: str, sink: RecordingSink, registry: CollectorRegistry
) -> None:
    assert (await post(url, "/shop/other", headers=BINARY, body=b"{}"))[0] == 404
    assert (await post(url, "/shop", headers=BINARY, body=b"{}"))[0] == 404
    assert (await post(url, "/shop/default", headers=BINARY, body=b"", method="GET"))[0] == 405
    assert (await post(url, "/shop/default", headers=BINARY, body=b"", method="OPTIONS"))[0] == 405
    assert (await post(url, "/shop/default", headers=BINARY, body=b"x" * 1001))[0] == 413
    assert sink.sent == []
    too_large = registry.get_sample_value(
        "queue_autoscaler_broker_events_rejected_total",
        {"namespace": "shop", "broker": "default", "reason": "too-large"},
    )
    assert too_large == 1.0


async def test_kafka_unavailable_gets_503_with_retry_after(url: str, sink: RecordingSink) -> None:
    sink.down = True
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + "/shop/default", headers=BINARY, data=b"{}") as response,
    ):
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"
        assert "the event was not stored" in await response.text()


async def test_produces_beyond_the_in_flight_bound_get_503_instead_of_queueing(
    url: str, sink: RecordingSink
) -> None:
    sink.gate = asyncio.Event()
    waiting = [asyncio.create_task(post(url, "/shop/default", headers=BINARY, body=b"{}")) for _ in range(2)]
    await eventually(
        lambda: asyncio.sleep(0, sink.waiting), lambda n: n == 2, timeout=10, what="two produces"
    )
    status, text = await post(url, "/shop/default", headers=BINARY, body=b"{}")
    assert status == 503
    assert "too many events in flight" in text
    sink.gate.set()
    assert [(await t)[0] for t in waiting] == [202, 202]
    assert len(sink.sent) == 2
