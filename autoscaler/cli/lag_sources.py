"""``queue-autoscaler lag`` for RabbitMQ queues, a Redis Streams group and a NATS JetStream consumer: the
figures the controller reads, with the same batched readers, as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from autoscaler import connections, errors, settings
from autoscaler.sources import nats, rabbitmq, redis


def add_arguments(lag: argparse.ArgumentParser) -> None:
    env = settings.env_default
    rabbit = lag.add_argument_group("RabbitMQ (management API)")
    rabbit.add_argument("--rabbitmq-queues", help="comma list of queue names")
    rabbit.add_argument("--rabbitmq-queue-pattern", help="regular expression matched against whole names")
    rabbit.add_argument("--rabbitmq-vhost", default="/", help="vhost (default /)")
    rabbit.add_argument(
        "--rabbitmq-management-url",
        default=env("--rabbitmq-management-url", None),
        help="management API URL (default $QUEUE_AUTOSCALER_RABBITMQ_MANAGEMENT_URL)",
    )
    rabbit.add_argument("--rabbitmq-username", default=env("--rabbitmq-username", None))
    rabbit.add_argument("--rabbitmq-password-file", type=Path, default=None)
    red = lag.add_argument_group("Redis Streams")
    red.add_argument("--redis-stream", help="stream key")
    red.add_argument("--redis-group", help="consumer group")
    red.add_argument(
        "--redis-url", default=env("--redis-url", None), help="default $QUEUE_AUTOSCALER_REDIS_URL"
    )
    red.add_argument("--redis-password-file", type=Path, default=None)
    nat = lag.add_argument_group("NATS JetStream (monitoring endpoint)")
    nat.add_argument("--nats-stream", help="stream")
    nat.add_argument("--nats-consumer", help="durable consumer")
    nat.add_argument(
        "--nats-monitoring-url",
        default=env("--nats-monitoring-url", None),
        help="default $QUEUE_AUTOSCALER_NATS_MONITORING_URL",
    )
    nat.add_argument("--nats-account", default="$G", help="account (default $G)")


def wanted(args: argparse.Namespace) -> bool:
    return bool(args.rabbitmq_queues or args.rabbitmq_queue_pattern or args.redis_stream or args.nats_stream)


def _required(value: str | None, flag: str, why: str) -> str:
    if not value:
        raise errors.SettingsError(f"{flag}: required {why}")
    return value


async def cmd(args: argparse.Namespace) -> int:
    """Prints one JSON object with a key per source asked for; raises the first source's error."""
    answer: dict[str, object] = {}
    if args.rabbitmq_queues or args.rabbitmq_queue_pattern:
        url = _required(args.rabbitmq_management_url, "--rabbitmq-management-url", "with RabbitMQ queues")
        path = args.rabbitmq_password_file
        queues = tuple(q.strip() for q in (args.rabbitmq_queues or "").split(",") if q.strip())
        found = await rabbitmq.read_queues(
            management_url=url,
            username=args.rabbitmq_username,
            password=(lambda: "") if path is None else (lambda: connections.read_secret(path)),
            query=rabbitmq.QueueQuery(args.rabbitmq_vhost, queues, args.rabbitmq_queue_pattern),
        )
        answer["rabbitmq"] = [
            {"queue": q.queue, "vhost": q.vhost, "ready": q.ready, "unacked": q.unacked} for q in found
        ]
    if args.redis_stream:
        url = _required(args.redis_url, "--redis-url", "with --redis-stream")
        group = _required(args.redis_group, "--redis-group", "with --redis-stream")
        path = args.redis_password_file
        backlog = await redis.read_stream(
            url=url,
            query=redis.StreamQuery(args.redis_stream, group, length=True),
            password=None if path is None else (lambda: connections.read_secret(path)),
        )
        answer["redis"] = {"lag": backlog.lag, "pending": backlog.pending, "length": backlog.length}
    if args.nats_stream:
        url = _required(args.nats_monitoring_url, "--nats-monitoring-url", "with --nats-stream")
        consumer = _required(args.nats_consumer, "--nats-consumer", "with --nats-stream")
        figures = await nats.read_consumer(
            monitoring_url=url, query=nats.ConsumerQuery(args.nats_stream, consumer, args.nats_account)
        )
        answer["nats"] = {"pending": figures.pending, "ack_pending": figures.ack_pending}
    json.dump(answer, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
