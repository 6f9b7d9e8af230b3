"""A NATS JetStream worker: pulls from a durable consumer at a bounded rate, acks each message after its
work.

``python -m devstack.workers.nats_worker --url nats://host:port --stream S --consumer C [--rate 20]``:
``--batch`` bounds the messages fetched at once (they are the consumer's ack-pending until acknowledged).
SIGTERM: stop; fetched and unacknowledged messages are redelivered after the consumer's ack wait.
"""

from __future__ import annotations

import argparse

import nats
from nats.errors import TimeoutError as NatsTimeout

from devstack.workers.common import arguments, run_until_signalled, running


async def work(args: argparse.Namespace) -> None:
    client = await nats.connect(args.url)
    async with running(args.rate, close=client.close) as run:
        subscription = await client.jetstream().pull_subscribe_bind(args.consumer, stream=args.stream)
        run.started(stream=args.stream)
        while True:
            try:
                messages = await subscription.fetch(args.batch, timeout=0.5)
            except NatsTimeout:
                continue
            for message in messages:
                await run.pace.one()
                await message.ack()


def main() -> None:
    parser = arguments(__doc__, url_env="NATS_URL", url_default="nats://127.0.0.1:19422", unit="messages")
    parser.add_argument("--stream", required=True)
    parser.add_argument("--consumer", required=True)
    parser.add_argument("--batch", type=int, default=10, help="messages fetched at once")
    run_until_signalled(work(parser.parse_args()))


if __name__ == "__main__":
    main()
