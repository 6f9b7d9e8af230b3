"""A Redis Streams worker: reads a stream in a consumer group at a bounded rate, XACKs each entry after
its work.

``python -m devstack.workers.redis_worker --url redis://host:port/0 --stream S --group G [--rate 20]``:
the consumer name is the pod's name; ``--count`` bounds the entries read at once (they are the group's
pending entries until acknowledged). SIGTERM: stop; entries read and not acknowledged stay pending.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import redis.asyncio as aioredis

from devstack.workers.common import Pace, run_until_signalled


async def work(args: argparse.Namespace) -> None:
    pod = os.environ.get("POD_NAME", "local")
    pace = Pace(args.rate)
    client = aioredis.Redis.from_url(args.url, decode_responses=True)
    try:
        print(json.dumps({"event": "started", "pod": pod, "stream": args.stream}), flush=True)
        while True:
            batch: Any = await client.xreadgroup(
                args.group, pod, {args.stream: ">"}, count=args.count, block=500
            )
            for _stream, entries in batch or []:
                for entry_id, _fields in entries:
                    await pace.one()
                    await client.xack(args.stream, args.group, entry_id)
    finally:
        await client.aclose()
        print(json.dumps({"event": "stopped", "pod": pod, "processed": pace.processed}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:19379/0"))
    parser.add_argument("--stream", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--rate", type=float, default=0.0, help="entries per second (0 = unlimited)")
    parser.add_argument("--count", type=int, default=10, help="entries read at once")
    run_until_signalled(work(parser.parse_args()))


if __name__ == "__main__":
    main()
