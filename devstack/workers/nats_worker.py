"""A NATS JetStream worker: pulls from a durable consumer at a bounded rate, acks each message after its
work.

``python -m devstack.workers.nats_worker --url nats://host:port --stream S --consumer C [--rate 20]``:
``--batch`` bounds the messages fetched at once (they are the consumer's ack-pending until acknowledged).
SIGTERM: stop; fetched and unacknowledged messages are redelivered after the consumer's ack wait.
"""

from __future__ import annotations

import argparse
import json
import os

import nats
from nats.errors import TimeoutError as NatsTimeout

from devstack.workers.common import Pace, run_until_signalled


async def work(args: argparse.Namespace) -> None:
    pod = os.environ.get("POD_NAME", "local")
    pace = Pace(args.rate)
    client = await nats.connect(args.url)
    try:
        subscription = await client.jetstream().pull_subscribe_bind(args.consumer, stream=args.stream)
        print(json.dumps({"event": "started", "pod": pod, "stream": args.stream}), flush=True)
        while True:
            try:
                messages = await subscription.fetch(args.batch, timeout=0.5)
            except NatsTimeout:
                continue
            for message in messages:
                await pace.one()
                await message.ack()
    finally:
        await client.close()
        print(json.dumps({"event": "stopped", "pod": pod, "processed": pace.processed}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default=os.environ.get("NATS_URL", "nats://127.0.0.1:19422"))
    parser.add_argument("--stream", required=True)
    parser.add_argument("--consumer", required=True)
    parser.add_argument("--rate", type=float, default=0.0, help="messages per second (0 = unlimited)")
    parser.add_argument("--batch", type=int, default=10, help="messages fetched at once")
    run_until_signalled(work(parser.parse_args()))


if __name__ == "__main__":
    main()
