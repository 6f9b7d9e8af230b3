"""A RabbitMQ worker: consumes one queue at a bounded rate and acknowledges each message after its work.

``python -m devstack.workers.rabbitmq_worker --url amqp://user:pass@host:port/ --queue Q [--rate 20]``:
``--rate`` is messages per second for this process (0 = as fast as possible); ``--prefetch`` bounds the
messages delivered and not yet acknowledged (they count in the queue's unacknowledged backlog).
SIGTERM: stop; the unacknowledged messages go back to the queue.
"""

from __future__ import annotations

import argparse

import aio_pika

from devstack.workers.common import arguments, run_until_signalled, running


async def work(args: argparse.Namespace) -> None:
    connection = await aio_pika.connect(args.url)
    async with running(args.rate, close=connection.close) as run:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=args.prefetch)
        queue = await channel.declare_queue(args.queue, passive=True)
        run.started(queue=args.queue)
        async with queue.iterator() as messages:
            async for message in messages:
                await run.pace.one()
                await message.ack()


def main() -> None:
    parser = arguments(
        __doc__, url_env="RABBITMQ_URL", url_default="amqp://127.0.0.1:19672/", unit="messages"
    )
    parser.add_argument("--queue", required=True)
    parser.add_argument("--prefetch", type=int, default=10, help="unacknowledged messages at most")
    run_until_signalled(work(parser.parse_args()))


if __name__ == "__main__":
    main()
