"""The message servers beside Kafka: RabbitMQ, Redis and NATS JetStream, started and stopped as a group.

``up`` starts whichever is not running (each on its own loopback port, reachable from pods on the bridge
address) and never touches a running one; ``stop`` ends just these servers and everything they started,
by recorded pid, leaving Kafka and Kubernetes alone.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from devstack import nats_server, procs, rabbitmq_server, redis_server
from devstack.config import Layout

# Every process each server runs under a recorded pid (the first one is the server itself).
PROCESSES: dict[str, tuple[str, ...]] = {
    rabbitmq_server.NAME: (rabbitmq_server.NAME, rabbitmq_server.EPMD),
    redis_server.NAME: (redis_server.NAME,),
    nats_server.NAME: (nats_server.NAME, nats_server.RELAY),
}
COMPONENTS = tuple(name for names in PROCESSES.values() for name in names)


def _say(message: str) -> None:
    print(f"[devstack] {message}", file=sys.stderr, flush=True)


def _missing(layout: Layout, server: str) -> bool:
    return any(procs.running(name, pid_dir=layout.pids) is None for name in PROCESSES[server])


def _start_rabbitmq(layout: Layout) -> None:
    rabbitmq_server.start(layout)
    rabbitmq_server.wait_ready(layout, timeout=90)
    _say(f"rabbitmq ready: management {layout.rabbitmq_management_url}, pods {layout.rabbitmq_pod_amqp_url}")


def _start_redis(layout: Layout) -> None:
    redis_server.start(layout)
    redis_server.wait_ready(layout, timeout=30)
    _say(f"redis ready at {layout.redis_url} (pods: {layout.redis_pod_url})")


def _start_nats(layout: Layout) -> None:
    nats_server.start(layout)
    nats_server.wait_ready(layout, timeout=30)
    _say(
        f"nats ready at {layout.nats_url}, monitoring {layout.nats_monitoring_url} "
        f"(pods: {layout.nats_pod_url})"
    )


_STARTERS: dict[str, Callable[[Layout], None]] = {
    rabbitmq_server.NAME: _start_rabbitmq,
    redis_server.NAME: _start_redis,
    nats_server.NAME: _start_nats,
}


def up(layout: Layout) -> None:
    """Starts the servers that are not running, all at once; raises with every start-up failure."""
    todo = [server for server in PROCESSES if _missing(layout, server)]
    for server in PROCESSES:
        if server not in todo:
            _say(f"{server} already running")
    if not todo:
        return
    _say(f"starting {', '.join(todo)}")
    with ThreadPoolExecutor(max_workers=len(todo)) as pool:
        futures = [pool.submit(_STARTERS[server], layout) for server in todo]
        errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise RuntimeError("\n\n".join(str(e) for e in errors))


def stop(layout: Layout) -> None:
    """Stops RabbitMQ (then its epmd), Redis and NATS (and its relay) by pid, and removes their state."""
    for server, stopper in (
        (rabbitmq_server.NAME, rabbitmq_server.stop),
        (redis_server.NAME, redis_server.stop),
        (nats_server.NAME, nats_server.stop),
    ):
        if any(procs.running(name, pid_dir=layout.pids) for name in PROCESSES[server]):
            _say(f"stopping {server}")
        stopper(layout)


def status(layout: Layout) -> dict[str, bool]:
    """Whether each server answers (on loopback and on the bridge)."""
    return {
        rabbitmq_server.NAME: rabbitmq_server.ready(layout),
        redis_server.NAME: redis_server.ready(layout),
        nats_server.NAME: nats_server.ready(layout),
    }
