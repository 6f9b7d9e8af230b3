"""The broker ingress and the dispatcher as real processes, on the devstack's Kafka and API server.

A Broker of class queue-autoscaler and Triggers are created in the test's namespace (the CRDs of
``manifests/eventing`` installed for real); subscribers and dead-letter sinks are small HTTP servers in the
test process that record what they receive and answer what the test says. That set-up is
``devstack.eventing_harness``, which the benchmarks share.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from kubernetes_asyncio import client

from autoscaler.model import trigger_consumer_group
from autoscaler.observability.log_events import EventingLog
from devstack.eventing_harness import (
    BILLING,
    BROKER,
    PARTITIONS,
    Broker,
    Received,
    broker_processes,
    committed,
    install_crds,
    subscriber,
    wait_logged_port,
)
from devstack.kube_rest import Rest
from tests.controller import Process
from tests.integration.test_manifests import kustomize, rest
from tests.stack import Devstack, eventually

__all__ = ["kustomize", "rest"]  # fixtures

pytestmark = pytest.mark.devstack


@pytest.fixture
async def broker(
    devstack: Devstack, kube: client.ApiClient, namespace: str, kustomize: Path, rest: Rest, tmp_path: Path
) -> AsyncIterator[Broker]:
    await install_crds(kustomize, rest)
    async with broker_processes(devstack, kube, namespace, tmp_path) as running_broker:
        yield running_broker


def new_id() -> str:
    return uuid.uuid4().hex


# --- the ingress -------------------------------------------------------------------------------------------


async def test_the_broker_becomes_ready_with_its_ingress_address_and_a_topic_of_the_configured_partitions(
    broker: Broker,
) -> None:
    conditions = await eventually(
        lambda: broker.conditions("brokers", BROKER),
        lambda c: c.get("Ready", {}).get("status") == "True",
        timeout=60,
        interval=0.2,
        what="Broker Ready",
    )
    assert {k: v["status"] for k, v in conditions.items()} == {
        "Addressable": "True",
        "TopicReady": "True",
        "Ready": "True",
    }
    status = await broker.status("brokers", BROKER)
    assert status["address"]["url"] == broker.url
    assert status["annotations"] == {"default.topic": broker.topic}
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.devstack.kafka_bootstrap)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(broker.topic) or await _partitions(consumer, broker.topic)
    finally:
        await consumer.stop()
    assert len(partitions) == PARTITIONS


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(topic) or set()


async def test_an_accepted_event_is_in_the_broker_topic_in_kafka_binary_mode_keyed_by_its_partitionkey(
    broker: Broker,
) -> None:
    event_id = new_id()
    await eventually(
        lambda: broker.post(event_id, BILLING, extra={"ce-partitionkey": "customer-7"}),
        lambda status: status == 202,
        timeout=60,
        interval=0.5,
        what="the ingress to accept the event (it knows the Broker once its watch saw it)",
    )
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.devstack.kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(broker.topic, p) for p in range(PARTITIONS)])
        await consumer.seek_to_beginning()
        found = None
        while found is None:
            batch = await consumer.getmany(timeout_ms=10000)
            assert batch, "the accepted event is not in the topic"
            found = next(
                (r for rs in batch.values() for r in rs if ("ce_id", event_id.encode()) in list(r.headers)),
                None,
            )
    finally:
        await consumer.stop()
    headers = dict(found.headers)
    assert found.key == b"customer-7"
    assert json.loads(found.value) == {"id": event_id}
    assert headers["ce_type"] == BILLING.encode()
    assert headers["content-type"] == b"application/json"
    assert headers["ce_knativebrokerttl"] == b"255"
    async with aiohttp.ClientSession() as session:
        async with session.post(broker.url.rsplit("/", 1)[0] + "/no-such-broker", data=b"{}") as response:
            assert response.status == 404
        async with session.get(broker.url) as response:
            assert response.status == 405


# --- the dispatcher ----------------------------------------------------------------------------------------


async def test_a_trigger_delivers_only_its_matching_events_in_binary_mode_with_prefer_reply(
    broker: Broker,
) -> None:
    async with subscriber() as sink:
        await broker.trigger(
            "billing", {"filter": {"attributes": {"type": BILLING}}, "subscriber": {"uri": sink.url}}
        )
        await broker.ready_trigger("billing")
        wanted = [new_id() for _ in range(20)]
        others = [new_id() for _ in range(20)]
        for billing, other in zip(wanted, others, strict=True):
            assert await broker.post(billing, BILLING) == 202
            assert await broker.post(other, "com.shivamitcs.shipping.started") == 202
        await eventually(
            lambda: asyncio.sleep(0, sorted(set(sink.ids()))),
            lambda ids: ids == sorted(wanted),
            timeout=60,
            what="every billing event delivered",
        )
        status = await broker.status("triggers", "billing")
        group = trigger_consumer_group(broker.namespace, "billing")
        await eventually(
            lambda: committed(broker.devstack.kafka_bootstrap, group),
            lambda offsets: sum(offsets.values()) == 40,
            timeout=30,
            interval=0.2,
            what="every record committed (delivered or filtered out)",
        )
    assert not set(sink.ids()) & set(others)
    first = sink.received[0]
    assert first.headers["prefer"] == "reply"
    assert first.headers["ce-type"] == BILLING
    assert json.loads(first.body) == {"id": first.id}
    assert status["subscriberUri"] == sink.url
    assert status["annotations"] == {"group.id": group}


async def test_a_failing_subscriber_is_retried_on_the_linear_schedule_then_succeeds(broker: Broker) -> None:
    attempts: dict[str, int] = {}

    def answer(request: Received) -> tuple[int, bytes, dict[str, str]]:
        attempts[request.id] = attempts.get(request.id, 0) + 1
        return (503 if attempts[request.id] <= 3 else 200), b"", {}

    async with subscriber() as sink:
        sink.answer = answer
        delivery = {"retry": 5, "backoffPolicy": "linear", "backoffDelay": "PT0.2S"}
        await broker.trigger("retried", {"subscriber": {"uri": sink.url}, "delivery": delivery})
        await broker.ready_trigger("retried")
        event_id = new_id()
        assert await broker.post(event_id, BILLING) == 202
        await eventually(
            lambda: asyncio.sleep(0, attempts.get(event_id, 0)),
            lambda n: n == 4,
            timeout=30,
            what="4 attempts",
        )
    times = [r.at for r in sink.received if r.id == event_id]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Retry n waits 0.2 s × n; the gap also holds one HTTP exchange, so it is never shorter.
    assert [g >= 0.2 * n - 0.001 for n, g in enumerate(gaps, start=1)] == [True, True, True], gaps


async def test_a_400_is_not_retried_and_is_dead_lettered_with_the_code_and_the_body(broker: Broker) -> None:
    async with subscriber() as sink, subscriber() as dead_letters:
        sink.answer = lambda _r: (400, b"amount must be positive", {})
        delivery = {"retry": 3, "backoffDelay": "PT0.1S", "deadLetterSink": {"uri": dead_letters.url}}
        await broker.trigger("refused", {"subscriber": {"uri": sink.url}, "delivery": delivery})
        await broker.ready_trigger("refused")
        event_id = new_id()
        assert await broker.post(event_id, BILLING) == 202
        await eventually(
            lambda: asyncio.sleep(0, dead_letters.ids()),
            lambda ids: ids == [event_id],
            timeout=30,
            what="dead letter",
        )
    assert sink.ids() == [event_id]  # one attempt: a 400 is never retried
    dead = dead_letters.received[0].headers
    assert dead["ce-knativeerrorcode"] == "400"
    assert base64.b64decode(dead["ce-knativeerrordata"]) == b"amount must be positive"
    assert dead["ce-knativeerrordest"] == sink.url


async def test_a_knative_serving_subscriber_is_not_resolved_and_the_reason_says_what_to_use_instead(
    broker: Broker,
) -> None:
    ref = {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "billing-worker-service"}
    await broker.trigger(
        "verbatim", {"filter": {"attributes": {"type": BILLING}}, "subscriber": {"ref": ref}}
    )
    conditions = await eventually(
        lambda: broker.conditions("triggers", "verbatim"),
        lambda c: "SubscriberResolved" in c,
        timeout=60,
        interval=0.2,
        what="Trigger status",
    )
    resolved = conditions["SubscriberResolved"]
    assert (resolved["status"], resolved["reason"]) == ("False", "KnativeServingNotInstalled")
    assert "Knative Serving is not installed" in resolved["message"]
    assert "apiVersion: v1, kind: Service, name: billing-worker-service" in resolved["message"]
    assert conditions["Ready"]["status"] == "False"
    assert conditions["BrokerReady"]["status"] == "True"


async def test_a_reply_goes_back_through_the_broker_to_the_trigger_that_matches_it(broker: Broker) -> None:
    def reply(request: Received) -> tuple[int, bytes, dict[str, str]]:
        headers = {
            "ce-specversion": "1.0",
            "ce-id": f"reply-to-{request.id}",
            "ce-source": "/billing-worker",
            "ce-type": "com.shivamitcs.billing.finished",
            "Content-Type": "application/json",
        }
        return 200, b'{"ok": true}', headers

    async with subscriber() as worker, subscriber() as audit:
        worker.answer = reply
        await broker.trigger(
            "work", {"filter": {"attributes": {"type": BILLING}}, "subscriber": {"uri": worker.url}}
        )
        finished = {"type": "com.shivamitcs.billing.finished"}
        await broker.trigger("audit", {"filter": {"attributes": finished}, "subscriber": {"uri": audit.url}})
        await broker.ready_trigger("work")
        await broker.ready_trigger("audit")
        event_id = new_id()
        assert await broker.post(event_id, BILLING) == 202
        await eventually(
            lambda: asyncio.sleep(0, audit.ids()),
            lambda ids: ids == [f"reply-to-{event_id}"],
            timeout=60,
            what="the reply at the second Trigger",
        )
    assert worker.ids() == [event_id]
    assert audit.received[0].headers["ce-knativebrokerttl"] == "254"
    assert json.loads(audit.received[0].body) == {"ok": True}


async def test_a_reply_loop_stops_when_knativebrokerttl_runs_out(broker: Broker) -> None:
    def echo(request: Received) -> tuple[int, bytes, dict[str, str]]:
        headers = {
            k: v for k, v in request.headers.items() if k.startswith("ce-") and k != "ce-knativebrokerttl"
        }
        return 200, request.body, {**headers, "Content-Type": "application/json"}

    async with subscriber() as looper:
        looper.answer = echo
        await broker.trigger("loop", {"subscriber": {"uri": looper.url}})
        await broker.ready_trigger("loop")
        event_id = new_id()
        assert await broker.post(event_id, BILLING, extra={"ce-knativebrokerttl": "5"}) == 202
        await eventually(
            lambda: asyncio.sleep(0, broker.dispatcher.logged(EventingLog.REPLY_DROPPED)),
            bool,
            timeout=60,
            what="the reply loop to be cut",
        )
    ttls = [r.headers["ce-knativebrokerttl"] for r in looper.received]
    assert ttls == ["5", "4", "3", "2", "1"]


async def test_an_ingress_whose_kafka_is_unreachable_answers_503_and_accepts_nothing(
    devstack: Devstack, kube: client.ApiClient, namespace: str, kustomize: Path, rest: Rest, tmp_path: Path
) -> None:
    await install_crds(kustomize, rest)
    async with broker_processes(devstack, kube, namespace, tmp_path) as running_broker:
        down = Process(
            [
                *running_broker.ingress.argv[:-6],
                "--kafka-bootstrap",
                "127.0.0.1:1",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--metrics-port",
                "0",
            ],
            tmp_path / "ingress-without-kafka.log",
            running_broker.ingress.env,
        ).start()
        try:
            port = await wait_logged_port(down, EventingLog.INGRESS_LISTENING, "port")
            headers = {"ce-specversion": "1.0", "ce-id": new_id(), "ce-source": "/t", "ce-type": BILLING}
            url = f"http://127.0.0.1:{port}/{namespace}/{BROKER}"
            async with aiohttp.ClientSession() as session:
                answer = await eventually(
                    lambda: _post_status(session, url, headers),
                    lambda found: found[0] != 404,
                    timeout=60,
                    interval=0.5,
                    what="the ingress to know the Broker",
                )
        finally:
            down.stop()
    status, text = answer
    assert status == 503
    assert "the event was not stored" in text
    assert "Kafka is unavailable" in text


async def _post_status(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> tuple[int, str]:
    async with session.post(url, headers=headers, data=b"{}") as response:
        return response.status, await response.text()
