"""A Kafka consumer worker: consumes a topic in a consumer group at a bounded rate and commits as it goes.

``python -m devstack.workers.kafka_worker --bootstrap B --topic T --group G [--rate 50]``:
``--rate`` is records per second for this process (0 = as fast as possible), so tests and the demo
can watch a backlog drain: each record takes 1/rate seconds and is committed when done, and time spent
idle (no records, or waiting for the group to assign partitions) is not made up later by a faster burst.
Every partition assignment and revocation is printed with its wall-clock time (``bench.sim.validate``
measures the group's rebalance pauses from them).
SIGTERM: commit what was processed, leave the group, exit.
A commit refused because the group rebalanced (another replica joined or left) is not an error: the records
since the last commit are delivered again to the partitions' new owner (at-least-once), and the worker goes
on, as every consumer of a scaled group must.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError


class PrintedRebalances(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, pod: str) -> None:
        self._pod = pod

    def _print(self, event: str, partitions: object) -> None:
        numbers = sorted(tp.partition for tp in partitions)  # type: ignore[attr-defined]
        print(
            json.dumps({"event": event, "pod": self._pod, "t": time.time(), "partitions": numbers}),
            flush=True,
        )

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._print("partitions revoked", revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._print("partitions assigned", assigned)


async def commit(
    consumer: AIOKafkaConsumer, pod: str, offsets: dict[TopicPartition, int] | None = None
) -> None:
    try:
        await consumer.commit(offsets)
    except (CommitFailedError, IllegalStateError) as exc:
        print(json.dumps({"event": "commit skipped: the group rebalanced", "pod": pod, "error": str(exc)}))


class Committer:
    """Commits the records processed so far, one commit in flight at a time and the next as soon as it is
    back, so that the group's lag is what is left within about one commit's round trip, while processing
    never waits for a commit."""

    def __init__(self, consumer: AIOKafkaConsumer, pod: str) -> None:
        self._consumer = consumer
        self._pod = pod
        self._done: dict[TopicPartition, int] = {}
        self._changed = asyncio.Event()

    def processed(self, tp: TopicPartition, offset: int) -> None:
        self._done[tp] = offset + 1
        self._changed.set()

    async def run(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            await self.commit()

    async def commit(self) -> None:
        assigned = self._consumer.assignment()
        due = {tp: offset for tp, offset in self._done.items() if tp in assigned}
        self._done = {tp: offset for tp, offset in self._done.items() if tp in assigned}
        if due:
            await commit(self._consumer, self._pod, due)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--rate", type=float, default=0.0, help="records per second (0 = unlimited)")
    args = parser.parse_args()
    pod = os.environ.get("POD_NAME", "local")
    consumer = AIOKafkaConsumer(
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps({"event": "starting", "pod": pod, "t": time.time()}), flush=True)
    consumer.subscribe([args.topic], listener=PrintedRebalances(pod))
    await consumer.start()
    print(json.dumps({"event": "started", "pod": pod, "topic": args.topic}), flush=True)
    processed = 0
    free_at = time.monotonic()  # when the previous record's processing ends
    committer = Committer(consumer, pod)
    committing = asyncio.create_task(committer.run()) if args.rate else None
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=10 if args.rate else 500)
            for tp, records in batch.items():
                for record in records:
                    processed += 1
                    if args.rate:
                        # Pace processing so that the backlog drains at a visible, predictable speed,
                        # and commit each record once done (in the background): the lag is what is left.
                        free_at = max(free_at, time.monotonic()) + 1 / args.rate
                        await asyncio.sleep(max(0.0, free_at - time.monotonic()))
                        committer.processed(tp, record.offset)
            if batch and not args.rate:
                await commit(consumer, pod)
    finally:
        try:
            if committing is not None:
                committing.cancel()
                await asyncio.gather(committing, return_exceptions=True)
                await committer.commit()
            else:
                await commit(consumer, pod)
        finally:
            await consumer.stop()
        stopped = {"event": "stopped", "pod": pod, "t": time.time(), "processed": processed}
        print(json.dumps(stopped), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
