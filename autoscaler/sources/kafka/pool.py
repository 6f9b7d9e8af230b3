"""One OffsetReader per Kafka connection: every target of a connection shares its client and caches.

Reads are keyed by a connection key: a connection's name (``default``, ``payments``), or
``<name>@<host:port,...>`` for a target whose ``kafka-bootstrap`` annotation names its brokers (the named
connection's TLS and SASL with those brokers; PLAINTEXT when no such connection is defined).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Collection, Mapping, Sequence
from types import TracebackType

from prometheus_client import CollectorRegistry

from autoscaler import connections
from autoscaler.errors import KafkaError, SettingsError
from autoscaler.sources.kafka.offsets import GroupQuery, OffsetReader, ReaderSettings, ReadResult


def connection_for(known: connections.Connections, key: str) -> connections.KafkaConnection:
    """The connection a key names; KafkaError when it names no connection."""
    name, _, brokers = key.partition("@")
    found = known.kafka.get(name)
    if brokers:
        base = (
            found if found is not None else connections.KafkaConnection.model_validate({"bootstrap": brokers})
        )
        return base.model_copy(update={"name": name, "bootstrap": tuple(brokers.split(","))})
    if found is None:
        try:
            known.kafka_connection(name)
        except SettingsError as exc:
            raise KafkaError(str(exc)) from None
        raise AssertionError("unreachable")
    return found


class ReaderPool:
    """Readers by connection key, made on first use and closed when no target names them any more."""

    def __init__(
        self,
        *,
        connections_file: connections.Connections | None = None,
        settings: ReaderSettings | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.connections = (
            connections_file if connections_file is not None else connections.Connections.empty()
        )
        self.settings = settings if settings is not None else ReaderSettings()
        self._registry = registry if registry is not None else CollectorRegistry()
        self._readers: dict[str, OffsetReader] = {}

    async def __aenter__(self) -> ReaderPool:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def reader(self, key: str) -> OffsetReader:
        """The reader of a connection key; a bare ``host:port,...`` is a PLAINTEXT connection of its own."""
        reader = self._readers.get(key)
        if reader is None:
            connection = (
                connection_for(self.connections, key)
                if "@" in key or ":" not in key
                else connections.KafkaConnection.model_validate({"name": key, "bootstrap": key})
            )
            reader = OffsetReader(connection, settings=self.settings, registry=self._registry)
            self._readers[key] = reader
        return reader

    async def read(self, *, connection: str, queries: Sequence[GroupQuery]) -> ReadResult:
        """One connection's read (see OffsetReader.read); raises when that cluster cannot be read."""
        return await self.reader(connection).read(queries=queries)

    async def read_all(
        self, *, queries: Mapping[str, Sequence[GroupQuery]]
    ) -> dict[str, ReadResult | KafkaError]:
        """Reads every connection at once; a connection that cannot be read gets its KafkaError instead."""
        keys = list(queries)
        outcomes = await asyncio.gather(
            *(self.read(connection=k, queries=queries[k]) for k in keys), return_exceptions=True
        )
        result: dict[str, ReadResult | KafkaError] = {}
        for key, outcome in zip(keys, outcomes, strict=True):
            if isinstance(outcome, BaseException) and not isinstance(outcome, KafkaError):
                raise outcome
            result[key] = outcome
        return result

    async def retain(self, keys: Collection[str]) -> None:
        """Closes the readers of connections no longer named."""
        for key in [k for k in self._readers if k not in keys]:
            await self._readers.pop(key).close()

    @property
    def requests_by_api(self) -> collections.Counter[str]:
        total: collections.Counter[str] = collections.Counter()
        for reader in self._readers.values():
            total.update(reader.requests_by_api)
        return total

    async def close(self) -> None:
        readers, self._readers = list(self._readers.values()), {}
        for reader in readers:
            await reader.close()
