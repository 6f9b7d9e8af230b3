"""A Kafka consumer worker: consumes a topic in a consumer group at a bounded rate and commits as it goes.

``python -m devstack.workers.kafka_worker --bootstrap B --topic T --group G [--rate 50]``:
``--rate`` is records per second for this process (0 = as fast as possible), so tests and the demo
can watch a backlog drain.
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

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import CommitFailedError


async def commit(consumer: AIOKafkaConsumer, pod: str) -> None:
    try:
        await consumer.commit()
    except CommitFailedError as exc:
        print(json.dumps({"event": "commit skipped: the group rebalanced", "pod": pod, "error": str(exc)}))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--rate", type=float, default=0.0, help="records per second (0 = unlimited)")
    args = parser.parse_args()
    consumer = AIOKafkaConsumer(
        args.topic,
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
    await consumer.start()
    pod = os.environ.get("POD_NAME", "local")
    print(json.dumps({"event": "started", "pod": pod, "topic": args.topic}), flush=True)
    processed = 0
    started = time.monotonic()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=10 if args.rate else 500)
            for _tp, records in batch.items():
                for _record in records:
                    processed += 1
                    if args.rate:
                        # Pace processing so that the backlog drains at a visible, predictable speed.
                        due = started + processed / args.rate
                        await asyncio.sleep(max(0.0, due - time.monotonic()))
            if batch:
                await commit(consumer, pod)
    finally:
        try:
            await commit(consumer, pod)
        finally:
            await consumer.stop()
        print(json.dumps({"event": "stopped", "pod": pod, "processed": processed}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
