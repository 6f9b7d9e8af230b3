"""The demo's billing flow through the event broker (``make demo``, see bench/demo.py).

manifests/examples has a Broker ``default-event-broker`` (class queue-autoscaler) and the Trigger
``billing-process-trigger`` (type ``com.shivamitcs.billing.started``, subscriber the core Service
``billing-worker-service``); the worker scales on that Trigger's backlog. The demo runs the real
``broker-ingress`` and ``dispatcher`` beside the controllers and the activator (the dispatcher delivers to
cluster Services through the activator), posts events of three types to the Broker at a steady pace, and
counts what the worker received (its ``--record`` file: one JSON line per delivered event, the worker's clock)
and what the dispatcher finished, by result (``queue_autoscaler_trigger_events_total``).

End-to-end latency is the worker's receive time minus the event's ``time`` attribute, which the demo sets to
its clock just before each POST (one machine, one clock): it includes the accept (202 after Kafka's acks=all),
the Trigger's backlog being noticed, the wake from zero and the delivery through the activator.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from autoscaler.model import broker_topic, trigger_consumer_group
from bench import load

BROKER = "default-event-broker"
TRIGGER = "billing-process-trigger"
BILLING = "com.shivamitcs.billing.started"
# The billing type and two others the Trigger's filter leaves out (one shares its prefix).
EVENT_TYPES = (BILLING, "com.shivamitcs.billing.completed", "com.shivamitcs.shipping.started")
RESULTS_METRIC = "queue_autoscaler_trigger_events_total"
DISPATCHER_RESULTS = ("delivered", "filtered", "dead-lettered", "dropped", "invalid")


def group_and_topic(namespace: str) -> tuple[str, str]:
    """The Trigger's consumer group and the Broker's topic: what the controller reads for the worker."""
    return trigger_consumer_group(namespace, TRIGGER), broker_topic(namespace, BROKER)


async def fresh_broker_topic(bootstrap: str, namespace: str) -> None:
    """Deletes the Broker's topic of an earlier run (the ingress creates it again): no events of that run
    are left to deliver, and Kafka drops the Trigger group's offsets on it, so its dispatcher starts anew."""
    await load.delete_topic(bootstrap, broker_topic(namespace, BROKER))


def event_types(count: int) -> Iterator[str]:
    """``count`` types, the three in turn."""
    for n in range(count):
        yield EVENT_TYPES[n % len(EVENT_TYPES)]


@dataclass
class Posting:
    """What the demo posted to the Broker: each event's type, send time and status."""

    sent: dict[str, tuple[str, float]] = field(default_factory=dict)  # id -> (type, wall time sent)
    statuses: dict[str, int] = field(default_factory=dict)  # id -> HTTP status
    began: float | None = None
    ended: float | None = None

    @property
    def accepted(self) -> list[str]:
        return [i for i, status in self.statuses.items() if status == 202]

    @property
    def done(self) -> bool:
        return self.ended is not None


async def post_events(url: str, *, count: int, seconds: float, posting: Posting) -> None:
    """``count`` binary-mode CloudEvents to the Broker at ``url``, evenly over ``seconds``."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16)) as session:

        async def one(event_type: str) -> None:
            event_id = uuid.uuid4().hex
            now = time.time()
            headers = {
                "ce-specversion": "1.0",
                "ce-id": event_id,
                "ce-source": "/demo/billing",
                "ce-type": event_type,
                "ce-time": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
                "Content-Type": "application/json",
            }
            posting.sent[event_id] = (event_type, now)
            body = json.dumps({"invoice": event_id}).encode()
            async with session.post(url, headers=headers, data=body) as response:
                await response.read()
                posting.statuses[event_id] = response.status

        posting.began = time.time()
        tasks = []
        for n, event_type in enumerate(event_types(count)):
            delay = posting.began + n * seconds / max(count, 1) - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(event_type)))
        await asyncio.gather(*tasks)
        posting.ended = time.time()


def read_record(path: Path) -> list[dict[str, Any]]:
    """The worker's record: one JSON object per event it received (a partly written last line is left)."""
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            found.append(json.loads(line))
    return found


async def scrape(port: int) -> str:
    timeout = aiohttp.ClientTimeout(total=5)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        return await response.text()


def dispatcher_results(metrics: str, *, namespace: str, trigger: str = TRIGGER) -> dict[str, int]:
    """The Trigger's finished records by result, from the dispatcher's /metrics text."""
    found: dict[str, int] = {}
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == RESULTS_METRIC and (labels.get("namespace"), labels.get("trigger")) == (
                namespace,
                trigger,
            ):
                found[labels["result"]] = found.get(labels["result"], 0) + int(sample.value)
    return found


def quantile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class FlowSummary:
    posted: dict[str, int]  # by type
    accepted: int
    statuses: dict[int, int]
    events_per_s_in: float | None  # accepted / posting time
    received: dict[str, int]  # by type, every delivery (duplicates included)
    unexpected: int  # deliveries of an event the filter should have left out, or not posted by the demo
    missing: int  # accepted billing events the worker never received
    duplicates: int
    dispatcher: dict[str, int]  # finished records by result
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    first_delivery_ms: float | None  # first event posted -> first delivery at the worker (woken from 0)
    pods: int  # distinct pods that received events


def summarize_flow(
    posting: Posting, record: Sequence[Mapping[str, Any]], dispatcher: Mapping[str, int]
) -> FlowSummary:
    """The broker part of the demo's summary, from what was posted, what the worker recorded and what the
    dispatcher counted."""
    posted: dict[str, int] = {}
    for event_type, _sent in posting.sent.values():
        posted[event_type] = posted.get(event_type, 0) + 1
    statuses: dict[int, int] = {}
    for status in posting.statuses.values():
        statuses[status] = statuses.get(status, 0) + 1
    accepted = set(posting.accepted)
    wanted = {i for i in accepted if posting.sent[i][0] == BILLING}
    received: dict[str, int] = {}
    seen: set[str] = set()
    duplicates = unexpected = 0
    latencies: list[float] = []
    for entry in record:
        event_type, event_id = str(entry.get("type")), str(entry.get("id"))
        received[event_type] = received.get(event_type, 0) + 1
        if event_id not in wanted:
            unexpected += 1
            continue
        if event_id in seen:
            duplicates += 1
            continue
        seen.add(event_id)
        if entry.get("time"):
            latencies.append((float(entry["at"]) - parse_time(str(entry["time"]))) * 1000)
    span = None if posting.began is None or posting.ended is None else posting.ended - posting.began
    first_post = min((sent for _t, sent in posting.sent.values()), default=None)
    first_at = min((float(e["at"]) for e in record if str(e.get("id")) in wanted), default=None)
    p50, p99 = quantile(latencies, 0.5), quantile(latencies, 0.99)
    return FlowSummary(
        posted=posted,
        accepted=len(accepted),
        statuses=statuses,
        events_per_s_in=None if not span else len(accepted) / span,
        received=received,
        unexpected=unexpected,
        missing=len(wanted - seen),
        duplicates=duplicates,
        dispatcher=dict(dispatcher),
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        first_delivery_ms=None if first_post is None or first_at is None else (first_at - first_post) * 1000,
        pods=len({str(e.get("pod")) for e in record}),
    )


def flow_rows(summary: FlowSummary) -> list[str]:
    """The summary's table for the worker on the Trigger (Markdown)."""

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f} ms"

    def by_type(counts: Mapping[str, int]) -> str:
        return ", ".join(f"{t}: {n}" for t, n in sorted(counts.items())) or "none"

    rate = "-" if summary.events_per_s_in is None else f"{summary.events_per_s_in:.1f}"
    results = summary.dispatcher
    return [
        f"| billing-worker-service (Trigger {TRIGGER} on Broker {BROKER}) | |",
        "|---|---:|",
        f"| events posted, by type | {by_type(summary.posted)} |",
        f"| accepted by the ingress (202) / responses by status | {summary.accepted} / {summary.statuses} |",
        f"| events/s in (accepted / posting time) | {rate} |",
        f"| received by the worker, by type | {by_type(summary.received)} |",
        f"| billing events missing / duplicated / other events received | "
        f"{summary.missing} / {summary.duplicates} / {summary.unexpected} |",
        f"| dispatcher: delivered / filtered out / dead-lettered | {results.get('delivered', 0)} / "
        f"{results.get('filtered', 0)} / {results.get('dead-lettered', 0)} |",
        f"| first event posted → first delivery, woken from zero | {ms(summary.first_delivery_ms)} |",
        f"| end to end (event `time` set at POST → worker received) p50 / p99 | "
        f"{ms(summary.latency_p50_ms)} / {ms(summary.latency_p99_ms)} |",
        f"| pods that received events | {summary.pods} |",
    ]


def flow_json(summary: FlowSummary) -> dict[str, Any]:
    return {
        "posted_by_type": summary.posted,
        "accepted": summary.accepted,
        "statuses": {str(k): v for k, v in summary.statuses.items()},
        "events_per_s_in": None if summary.events_per_s_in is None else round(summary.events_per_s_in, 1),
        "received_by_type": summary.received,
        "missing": summary.missing,
        "duplicates": summary.duplicates,
        "unexpected": summary.unexpected,
        "dispatcher_results": summary.dispatcher,
        "first_delivery_ms": _round(summary.first_delivery_ms),
        "latency_p50_ms": _round(summary.latency_p50_ms),
        "latency_p99_ms": _round(summary.latency_p99_ms),
        "latency_from": "the event's time attribute (set by the demo just before its POST)",
        "pods": summary.pods,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def live_line(posting: Posting, record: Sequence[Mapping[str, Any]]) -> str:
    """One line for the live view: what was posted and accepted, and what the worker received by type."""
    received: dict[str, int] = {}
    for entry in record:
        short = str(entry.get("type")).removeprefix("com.shivamitcs.")
        received[short] = received.get(short, 0) + 1
    shown = ", ".join(f"{t} {n}" for t, n in sorted(received.items())) or "nothing yet"
    return f"  broker: {len(posting.sent)} posted, {len(posting.accepted)} accepted; worker received: {shown}"
