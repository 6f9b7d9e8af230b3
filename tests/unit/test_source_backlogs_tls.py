"""The controller's RabbitMQ, Redis and NATS readers say so when a connection skips certificate checks."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from autoscaler import connections
from autoscaler.cli.backlogs import SourceBacklogs
from autoscaler.observability.log_events import SourceLog

UNVERIFIED = "tls: {insecure-skip-verify: true}"


async def test_each_kind_warns_once_per_connection_that_skips_verification(tmp_path: Path) -> None:
    path = tmp_path / "connections.yaml"
    path.write_text(
        f"""
rabbitmq: {{rmq: {{management-url: 'https://rabbitmq:15671', {UNVERIFIED}}}}}
redis: {{cache: {{url: 'rediss://redis:6380/0', {UNVERIFIED}}}}}
nats: {{events: {{monitoring-url: 'https://nats:8222', {UNVERIFIED}}}, plain: {{monitoring-url: 'http://n:8222'}}}}
"""
    )
    backlogs = SourceBacklogs(connections.load(path), registry=CollectorRegistry())
    try:
        with capture_logs() as logs:
            for _ in range(2):  # readers are made once per connection
                backlogs._queue_reader("rmq")
                backlogs._stream_reader("cache")
                backlogs._consumer_reader("events")
                backlogs._consumer_reader("plain")
    finally:
        await backlogs.close()

    warned = [
        (entry["log_level"], entry["source"], entry["connection"])
        for entry in logs
        if entry["event"] == SourceLog.VERIFICATION_SKIPPED
    ]
    assert warned == [
        ("warning", "rabbitmq", "rmq"),
        ("warning", "redis", "cache"),
        ("warning", "nats", "events"),
    ]
