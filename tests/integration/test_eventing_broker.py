"""The broker ingress and the dispatcher as real processes, on the devstack's Kafka and API server.

A Broker of class queue-autoscaler and Triggers are created in the test's namespace (the CRDs of
``manifests/eventing`` installed for real); subscribers and dead-letter sinks are small HTTP servers in the
test process that record what they receive and answer what the test says.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from kubernetes_asyncio import client

from autoscaler.model import broker_topic, trigger_consumer_group
from autoscaler.observability.log_events import EventingLog
from tests.controller import Process, queue_autoscaler
from tests.integration.test_eventing_manifests import install_crds
from tests.integration.test_manifests import Rest, kustomize, rest
from tests.stack import Devstack, eventually
from tests.unit.activator.helpers import running

__all__ = ["kustomize", "rest"]  # fixtures

pytestmark = pytest.mark.devstack

GROUP, VERSION = "eventing.knative.dev", "v1"
BROKER = "default-event-broker"
BILLING = "com.shivamitcs.billing.started"


# --- a subscriber that records -----------------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def id(self) -> str:
        return self.headers.get("ce-id", "")


@dataclass
class Subscriber:
    """Records every request; ``answer`` decides the status (and body) per request."""

    received: list[Received] = field(default_factory=list)
    answer: Callable[[Received], tuple[int, bytes, dict[str, str]]] = lambda _r: (200, b"", {})
    url: str = ""
    delay: float = 0.0  # seconds before answering

    async def handle(self, request: web.Request) -> web.Response:
        if self.delay:
            await asyncio.sleep(self.delay)
        got = Received(
            {k.lower(): v for k, v in request.headers.items()},
            await request.read(),
            asyncio.get_running_loop().time(),
        )
        self.received.append(got)
        status, body, headers = self.answer(got)
        return web.Response(status=status, body=body, headers=headers)

    def ids(self) -> list[str]:
        return [r.id for r in self.received]


@contextlib.asynccontextmanager
async def subscriber() -> AsyncIterator[Subscriber]:
    sink = Subscriber()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", sink.handle)
    async with running(app) as port:
        sink.url = f"http://127.0.0.1:{port}/"
        yield sink


# --- the processes ----------------------------------------------------------------------------------------


def logged_port(process: Process, event: str, key: str) -> int | None:
    for entry in process.logged(event):
        return int(entry[key])
    return None


async def wait_logged_port(process: Process, event: str, key: str) -> int:
    async def probe() -> int | None:
        process.assert_alive()
        return logged_port(process, event, key)

    found = await eventually(probe, lambda p: p is not None, timeout=60, interval=0.1, what=f"{event} {key}")
    assert found is not None
    return found


@dataclass
class Broker:
    namespace: str
    ingress: Process
    dispatcher: Process
    url: str  # the Broker's address: POST events here
    api: client.ApiClient
    devstack: Devstack

    @property
    def topic(self) -> str:
        return broker_topic(self.namespace, BROKER)

    async def post(self, event_id: str, event_type: str, *, extra: dict[str, str] | None = None) -> int:
        headers = {
            "ce-specversion": "1.0",
            "ce-id": event_id,
            "ce-source": "/tests",
            "ce-type": event_type,
            "Content-Type": "application/json",
            **(extra or {}),
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.url, headers=headers, data=json.dumps({"id": event_id}).encode()) as response,
        ):
            return response.status

    async def trigger(
        self, name: str, spec: dict[str, Any], annotations: dict[str, str] | None = None
    ) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Trigger",
            "metadata": {"name": name, "annotations": annotations or {}},
            "spec": {"broker": BROKER, **spec},
        }
        await client.CustomObjectsApi(self.api).create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "triggers", body
        )

    async def status(self, plural: str, name: str) -> dict[str, Any]:
        found = await client.CustomObjectsApi(self.api).get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural, name
        )
        return dict(found.get("status") or {})

    async def conditions(self, plural: str, name: str) -> dict[str, dict[str, str]]:
        return {c["type"]: c for c in (await self.status(plural, name)).get("conditions", [])}

    async def ready_trigger(self, name: str) -> None:
        """Waits until the Trigger is Ready and its consumer group holds an offset for every partition."""
        await eventually(
            lambda: self.conditions("triggers", name),
            lambda c: c.get("Ready", {}).get("status") == "True",
            timeout=60,
            interval=0.2,
            what=f"Trigger {name} Ready",
        )
        group = trigger_consumer_group(self.namespace, name)
        await eventually(
            lambda: committed(self.devstack.kafka_bootstrap, group),
            lambda offsets: len(offsets) == PARTITIONS,
            timeout=60,
            interval=0.2,
            what=f"group {group} anchored on every partition",
        )


PARTITIONS = 3


async def committed(bootstrap: str, group: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


@contextlib.asynccontextmanager
async def broker_processes(
    devstack: Devstack,
    kube: client.ApiClient,
    namespace: str,
    tmp_path: Path,
    *,
    dispatcher_extra: tuple[str, ...] = (),
) -> AsyncIterator[Broker]:
    """The Broker in ``namespace``, and an ingress and a dispatcher process for that namespace."""
    await client.CustomObjectsApi(kube).create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "brokers",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Broker",
            "metadata": {
                "name": BROKER,
                "annotations": {"eventing.knative.dev/broker.class": "queue-autoscaler"},
            },
        },
    )
    env = {**os.environ, "QUEUE_AUTOSCALER_LOG_FORMAT": "json"}
    common = [
        "--kubeconfig",
        str(devstack.kubeconfig),
        "--namespace",
        namespace,
        "--kafka-bootstrap",
        devstack.kafka_bootstrap,
        "--broker-partitions",
        str(PARTITIONS),
    ]
    ingress = Process(
        queue_autoscaler(
            "broker-ingress", *common, "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"
        ),
        tmp_path / "ingress.log",
        env,
    ).start()
    dispatcher: Process | None = None
    try:
        port = await wait_logged_port(ingress, EventingLog.INGRESS_LISTENING, "port")
        ingress_url = f"http://127.0.0.1:{port}"
        dispatcher = Process(
            queue_autoscaler(
                "dispatcher",
                *common,
                "--broker-ingress-url",
                ingress_url,
                "--metrics-port",
                "0",
                *dispatcher_extra,
            ),
            tmp_path / "dispatcher.log",
            env,
        ).start()
        await wait_logged_port(dispatcher, EventingLog.DISPATCHER_STARTED, "metrics_port")
        yield Broker(namespace, ingress, dispatcher, f"{ingress_url}/{namespace}/{BROKER}", kube, devstack)
    finally:
        for process in (dispatcher, ingress):
            if process is not None:
                process.stop()


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
