"""The devstack's real Kafka stopped under a running broker ingress and dispatcher: while it is down every
POST is answered 503 with the reason, none hangs; once it is back the same ingress accepts again, and every
event that got 202 (before, during and after) is delivered. The suite runs sequentially: Kafka is always
resumed and ready again before the test ends, so the tests after it find it running."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from dataclasses import dataclass

import aiohttp
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from devstack import kafka as devstack_kafka
from devstack.eventing_harness import BILLING, Broker, subscriber
from tests.e2e.test_eventing_delivery import delivered
from tests.integration.test_eventing_broker import broker, kustomize, new_id, rest
from tests.stack import eventually

__all__ = ["broker", "kustomize", "rest"]  # fixtures


async def topics_in(broker: Broker) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.devstack.kafka_bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


pytestmark = pytest.mark.devstack

HUNG = 30.0  # seconds: three times the ingress's Kafka request timeout; an answer later than this is a hang


@dataclass
class Answer:
    event_id: str
    phase: str  # what Kafka was doing when the request was sent: up, stopping, down, resuming, back
    status: int | None  # None: no answer within HUNG seconds
    body: str
    seconds: float
    answered: str = ""  # what Kafka was doing when the answer came


@dataclass
class Producer:
    """Posts events one after another on each of ``workers`` connections until told to stop."""

    broker: Broker
    phase: str = "up"
    answers: list[Answer] | None = None
    stopping: bool = False

    async def run(self, workers: int = 4) -> None:
        self.answers = []
        timeout = aiohttp.ClientTimeout(total=HUNG)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await asyncio.gather(*(self._worker(session) for _ in range(workers)))

    async def _worker(self, session: aiohttp.ClientSession) -> None:
        assert self.answers is not None
        loop = asyncio.get_running_loop()
        while not self.stopping:
            event_id, phase, started = new_id(), self.phase, loop.time()
            headers = {"ce-specversion": "1.0", "ce-id": event_id, "ce-source": "/outage", "ce-type": BILLING}
            try:
                async with session.post(self.broker.url, headers=headers, data=b"{}") as response:
                    answer = Answer(event_id, phase, response.status, await response.text(), 0.0)
            except TimeoutError:
                answer = Answer(event_id, phase, None, "", 0.0)
            answer.seconds, answer.answered = loop.time() - started, self.phase
            self.answers.append(answer)
            if answer.status == 202:
                await asyncio.sleep(0.02)  # a steady trickle, not a flood, while Kafka is up

    def accepted(self) -> set[str]:
        return {a.event_id for a in self.answers or [] if a.status == 202}


async def test_with_kafka_stopped_the_ingress_answers_503_and_every_event_it_accepted_is_delivered(
    broker: Broker,
) -> None:
    layout = broker.devstack.layout
    async with subscriber() as sink:
        await broker.trigger("outage", {"subscriber": {"uri": sink.url}})
        await broker.ready_trigger("outage")
        producer = Producer(broker)
        posting = asyncio.create_task(producer.run())
        try:
            await eventually(
                lambda: asyncio.sleep(0, len(producer.accepted())),
                lambda n: n >= 50,
                timeout=60,
                what="events accepted before Kafka stops",
            )
            try:
                producer.phase = "stopping"
                await asyncio.to_thread(devstack_kafka.stop, layout)
                producer.phase = "down"
                down_from = len(producer.answers or [])
                await eventually(
                    lambda: asyncio.sleep(
                        0, [a for a in (producer.answers or [])[down_from:] if a.phase == "down"]
                    ),
                    lambda answers: len(answers) >= 4,
                    timeout=120,
                    interval=0.2,
                    what="answers while Kafka is down",
                )
            finally:
                producer.phase = "resuming"
                await asyncio.to_thread(devstack_kafka.resume, layout)
                await asyncio.to_thread(devstack_kafka.wait_ready, layout, timeout=120)
            producer.phase = "back"
            topics = await topics_in(broker)
            assert broker.topic in topics, (
                "Kafka came back without the broker's topic: it was started afresh while stopped (a devstack "
                "up elsewhere), not resumed on its data"
            )
            await eventually(
                lambda: asyncio.sleep(0, [a for a in producer.answers or [] if a.phase == "back"]),
                lambda answers: sum(1 for a in answers if a.status == 202) >= 50,
                timeout=120,
                interval=0.2,
                what="the same ingress accepting events again once Kafka is back",
            )
        finally:
            producer.stopping = True
            await posting
        broker.ingress.assert_alive()
        accepted = producer.accepted()
        await eventually(
            lambda: delivered(sink.ids()),
            lambda ids: ids >= accepted,
            timeout=180,
            interval=0.5,
            what="every accepted event delivered",
        )
    answers = producer.answers or []
    by_phase = {
        phase: Counter(a.status for a in group)
        for phase, group in itertools.groupby(sorted(answers, key=lambda a: a.phase), key=lambda a: a.phase)
    }
    down = [a for a in answers if a.phase == a.answered == "down"]  # sent and answered while Kafka was down
    print(
        f"\nanswers by Kafka's state when sent: {by_phase}; slowest answer while down: "
        f"{max(a.seconds for a in down):.1f} s; accepted {len(accepted)}, all delivered; "
        f"{len(sink.ids()) - len(set(sink.ids()))} duplicates"
    )
    assert [a for a in answers if a.status is None] == []  # no request hung
    assert {a.status for a in answers} <= {202, 503}
    assert {a.status for a in down} == {503}
    assert all("not stored" in a.body and "Kafka" in a.body for a in down), [a.body for a in down][:3]
    assert set(sink.ids()) <= {a.event_id for a in answers}
