"""A RabbitMQ worker: consumes one queue at a bounded rate and acknowledges each message after its work.

``python -m devstack.workers.rabbitmq_worker --url amqp://user:pass@host:port/ --queue Q [--rate 20]``:
``--rate`` is messages per second for this process (0 = as fast as possible); ``--prefetch`` bounds the
messages delivered and not yet acknowledged (they count in the queue's unacknowledged backlog).
SIGTERM: stop; the unacknowledged messages go back to the queue.
"""

from __future__ import annotations

import argparse
import json
import os

import aio_pika

from devstack.workers.common import Pace, run_until_signalled


async def work(args: argparse.Namespace) -> None:
    pod = os.environ.get("POD_NAME", "local")
    pace = Pace(args.rate)
    connection = await aio_pika.connect(args.url)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=args.prefetch)
        queue = await channel.declare_queue(args.queue, passive=True)
        print(json.dumps({"event": "started", "pod": pod, "queue": args.queue}), flush=True)
        async with queue.iterator() as messages:
            async for message in messages:
                await pace.one()
                await message.ack()
    finally:
        await connection.close()
        print(json.dumps({"event": "stopped", "pod": pod, "processed": pace.processed}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default=os.environ.get("RABBITMQ_URL", "amqp://127.0.0.1:19672/"))
    parser.add_argument("--queue", required=True)
    parser.add_argument("--rate", type=float, default=0.0, help="messages per second (0 = unlimited)")
    parser.add_argument("--prefetch", type=int, default=10, help="unacknowledged messages at most")
    run_until_signalled(work(parser.parse_args()))


if __name__ == "__main__":
    main()
