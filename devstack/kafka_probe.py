"""A metadata round trip with aiokafka: the broker is ready when it answers with itself as a live broker."""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient


async def _describe(bootstrap: str) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        return bool(cluster.get("brokers"))
    except Exception:  # any failure means "not ready yet"
        return False
    finally:
        await admin.close()


def answers(bootstrap: str) -> bool:
    return asyncio.run(_describe(bootstrap))
