"""control.backlogs.BacklogSource over the RabbitMQ, Redis and NATS readers: one reader per named
connection of the connections file, every connection read at once, one batch per server per tick."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

import structlog
from prometheus_client import CollectorRegistry

from autoscaler import connections as conns
from autoscaler.control.backlogs import SourceFigures
from autoscaler.errors import SettingsError, SourceError
from autoscaler.model import TargetKey
from autoscaler.observability.log_events import SourceLog
from autoscaler.policy.backlog_keys import RedisCount, SourcePolicies
from autoscaler.sources import nats, rabbitmq, reading, redis
from autoscaler.sources.http import AiohttpGetter

log = structlog.get_logger(__name__)


def _secret(path: Any) -> Callable[[], str]:
    return lambda: conns.read_secret(path)


class SourceBacklogs:
    def __init__(
        self,
        connections: conns.Connections,
        *,
        registry: CollectorRegistry,
        settings: reading.ReaderSettings | None = None,
    ) -> None:
        self._connections = connections
        self._registry = registry
        self._settings = settings if settings is not None else reading.ReaderSettings()
        self._rabbitmq: dict[str, rabbitmq.QueueReader] = {}
        self._redis: dict[str, redis.StreamReader] = {}
        self._nats: dict[str, nats.ConsumerReader] = {}
        self._getters: list[AiohttpGetter] = []

    async def read(self, *, targets: Mapping[TargetKey, SourcePolicies]) -> dict[TargetKey, SourceFigures]:
        rabbit: dict[str, dict[TargetKey, rabbitmq.QueueQuery]] = {}
        streams: dict[str, dict[TargetKey, redis.StreamQuery]] = {}
        consumers: dict[str, dict[TargetKey, nats.ConsumerQuery]] = {}
        fields: dict[TargetKey, dict[str, Any]] = {key: {} for key in targets}
        for key, p in targets.items():
            if p.rabbitmq is not None:
                query = rabbitmq.QueueQuery(p.rabbitmq.vhost, p.rabbitmq.queues, p.rabbitmq.queue_pattern)
                rabbit.setdefault(p.rabbitmq.connection, {})[key] = query
            if p.redis is not None:
                length = p.redis.count is RedisCount.LENGTH
                stream = redis.StreamQuery(p.redis.stream, p.redis.group, length=length)
                streams.setdefault(p.redis.connection, {})[key] = stream
            if p.nats is not None:
                account = (
                    self._connections.nats[p.nats.connection].account
                    if (p.nats.connection in self._connections.nats)
                    else nats.DEFAULT_ACCOUNT
                )
                consumer = nats.ConsumerQuery(p.nats.stream, p.nats.consumer, account)
                consumers.setdefault(p.nats.connection, {})[key] = consumer

        async def batch(
            kind: str, name: str, wanted: Mapping[TargetKey, Any], reader: Callable[[], Any]
        ) -> None:
            try:
                source = reader()
            except KeyError:
                known = ", ".join(sorted(getattr(self._connections, kind))) or "none"
                why = f"no {kind} connection named {name!r} in the connections file (known: {known})"
                for key in wanted:
                    fields[key][f"{kind}_error"] = why
                return
            except SettingsError as exc:
                why = f"{kind} connection {name!r}: {exc}"
                for key in wanted:
                    fields[key][f"{kind}_error"] = why
                return
            read: Callable[..., Awaitable[Mapping[Any, Any]]] = source.read
            answer = await read(queries=list(wanted.values()))
            for key, query in wanted.items():
                outcome = answer.get(query, SourceError("missing from the read"))
                if isinstance(outcome, SourceError):
                    fields[key][f"{kind}_error"] = str(outcome)
                else:
                    fields[key][kind] = outcome

        async with asyncio.TaskGroup() as group:
            for name, queues in rabbit.items():
                group.create_task(batch("rabbitmq", name, queues, partial(self._queue_reader, name)))
            for name, groups in streams.items():
                group.create_task(batch("redis", name, groups, partial(self._stream_reader, name)))
            for name, durable in consumers.items():
                group.create_task(batch("nats", name, durable, partial(self._consumer_reader, name)))
        return {key: SourceFigures(**found) for key, found in fields.items()}

    def _queue_reader(self, name: str) -> rabbitmq.QueueReader:
        if name not in self._rabbitmq:
            c = self._connections.rabbitmq[name]
            ctx = self._ssl_context("rabbitmq", name, c.tls)
            self._rabbitmq[name] = rabbitmq.QueueReader(
                c.management_url,
                username=c.username,
                password=(lambda: "") if c.password_file is None else _secret(c.password_file),
                getter=self._getter(ctx),
                settings=self._settings,
                registry=self._registry,
            )
        return self._rabbitmq[name]

    def _stream_reader(self, name: str) -> redis.StreamReader:
        if name not in self._redis:
            c = self._connections.redis[name]
            self._ssl_context("redis", name, c.tls)  # the files are usable, or SettingsError names them
            self._redis[name] = redis.StreamReader(
                c.url,
                password=None if c.password_file is None else _secret(c.password_file),
                tls=c.tls,
                settings=self._settings,
                registry=self._registry,
            )
        return self._redis[name]

    def _consumer_reader(self, name: str) -> nats.ConsumerReader:
        if name not in self._nats:
            c = self._connections.nats[name]
            ctx = self._ssl_context("nats", name, c.tls)
            self._nats[name] = nats.ConsumerReader(
                c.monitoring_url,
                getter=self._getter(ctx),
                settings=self._settings,
                registry=self._registry,
            )
        return self._nats[name]

    @staticmethod
    def _ssl_context(kind: str, name: str, tls: conns.TLS | None) -> ssl.SSLContext | None:
        if tls is None:
            return None
        context = conns.ssl_context(tls)
        if tls.insecure_skip_verify:
            log.warning(
                SourceLog.VERIFICATION_SKIPPED,
                source=kind,
                connection=name,
                detail="insecure-skip-verify: the server's certificate and name are not checked",
            )
        return context

    def _getter(self, ctx: ssl.SSLContext | None) -> AiohttpGetter:
        getter = AiohttpGetter(timeout=self._settings.request_timeout, ssl_context=ctx)
        self._getters.append(getter)
        return getter

    async def close(self) -> None:
        readers: list[Any] = [*self._rabbitmq.values(), *self._redis.values(), *self._nats.values()]
        self._rabbitmq, self._redis, self._nats = {}, {}, {}
        for reader in readers:
            await reader.close()
        getters, self._getters = self._getters, []
        for getter in getters:
            await getter.close()
