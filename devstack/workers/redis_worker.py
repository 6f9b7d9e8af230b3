"""A Redis Streams worker: reads a stream in a consumer group at a bounded rate, XACKs each entry after
its work.

``python -m devstack.workers.redis_worker --url redis://host:port/0 --stream S --group G [--rate 20]``:
the consumer name is the pod's name; ``--count`` bounds the entries read at once (they are the group's
pending entries until acknowledged). SIGTERM: stop; entries read and not acknowledged stay pending.
"""

from __future__ import annotations

import argparse
from typing import Any

import redis.asyncio as aioredis

from devstack.workers.common import arguments, run_until_signalled, running


async def work(args: argparse.Namespace) -> None:
    client = aioredis.Redis.from_url(args.url, decode_responses=True)
    async with running(args.rate, close=client.aclose) as run:
        run.started(stream=args.stream)
        while True:
            batch: Any = await client.xreadgroup(
                args.group, run.pod, {args.stream: ">"}, count=args.count, block=500
            )
            for _stream, entries in batch or []:
                for entry_id, _fields in entries:
                    await run.pace.one()
                    await client.xack(args.stream, args.group, entry_id)


def main() -> None:
    parser = arguments(__doc__, url_env="REDIS_URL", url_default="redis://127.0.0.1:19379/0", unit="entries")
    parser.add_argument("--stream", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--count", type=int, default=10, help="entries read at once")
    run_until_signalled(work(parser.parse_args()))


if __name__ == "__main__":
    main()
