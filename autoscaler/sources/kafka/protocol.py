"""Kafka requests aiokafka lacks at the versions we need, with typed builders and decoders.

Flexible versions only (compact strings and arrays, tagged fields), all from Kafka 3.0 on:
FindCoordinator v4 (batched keys, KIP-699), OffsetFetch v8 (many groups per request, KIP-709) and
ListOffsets v7. Metadata uses aiokafka's own request, with topic auto-creation turned off.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.metadata import MetadataRequest, MetadataResponse_v5
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int8,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)

GROUP_KEY_TYPE = 0
LATEST = -1
EARLIEST = -2
READ_UNCOMMITTED = 0
READ_COMMITTED = 1

_NO_TAGS: dict[int, bytes] = {}
_INT16, _INT32, _INT64 = struct.Struct(">h"), struct.Struct(">i"), struct.Struct(">q")


class FindCoordinatorResponse_v4(Response):  # type: ignore[misc]
    API_KEY = 10
    API_VERSION = 4
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "coordinators",
            CompactArray(
                ("key", CompactString("utf-8")),
                ("node_id", Int32),
                ("host", CompactString("utf-8")),
                ("port", Int32),
                ("error_code", Int16),
                ("error_message", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class FindCoordinatorRequest_v4(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 10
    API_VERSION = 4
    RESPONSE_TYPE = FindCoordinatorResponse_v4
    SCHEMA = Schema(
        ("key_type", Int8),
        ("coordinator_keys", CompactArray(CompactString("utf-8"))),
        ("tags", TaggedFields),
    )


class FindCoordinatorRequest(Request[FindCoordinatorRequest_v4]):  # type: ignore[misc]
    API_KEY = 10

    def __init__(self, groups: Sequence[str]) -> None:
        self.groups = list(groups)

    def build(self, request_struct_class: type[FindCoordinatorRequest_v4]) -> FindCoordinatorRequest_v4:
        return request_struct_class(GROUP_KEY_TYPE, self.groups, _NO_TAGS)


class OffsetFetchResponse_v8(Response):  # type: ignore[misc]
    API_KEY = 9
    API_VERSION = 8
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "groups",
            CompactArray(
                ("group_id", CompactString("utf-8")),
                (
                    "topics",
                    CompactArray(
                        ("name", CompactString("utf-8")),
                        (
                            "partitions",
                            CompactArray(
                                ("partition_index", Int32),
                                ("committed_offset", Int64),
                                ("committed_leader_epoch", Int32),
                                ("metadata", CompactString("utf-8")),
                                ("error_code", Int16),
                                ("tags", TaggedFields),
                            ),
                        ),
                        ("tags", TaggedFields),
                    ),
                ),
                ("error_code", Int16),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )

    @classmethod
    def decode(cls, data: bytes | io.BytesIO) -> OffsetFetchAnswer:
        """Decodes straight into GroupCommitted values; SCHEMA above is kept for encoding (tests).

        With thousands of groups per answer, aiokafka's generic schema decoding was the controller's largest
        CPU cost per tick; this reads the same layout with ``struct`` in one pass.
        """
        cursor = _Cursor(data.read() if isinstance(data, io.BytesIO) else bytes(data))
        throttle_time_ms = cursor.int32()
        groups = []
        for _ in range(cursor.array_length()):
            group = cursor.string() or ""
            partitions = []
            for _ in range(cursor.array_length()):
                topic = cursor.string() or ""
                for _ in range(cursor.array_length()):
                    index, offset = cursor.int32(), cursor.int64()
                    cursor.pos += 4  # committed_leader_epoch
                    cursor.string()  # metadata
                    error_code = cursor.int16()
                    cursor.skip_tags()
                    partitions.append(
                        CommittedOffset(topic, index, None if offset < 0 else offset, error_code)
                    )
                cursor.skip_tags()
            error_code = cursor.int16()
            cursor.skip_tags()
            groups.append(GroupCommitted(group, error_code, tuple(partitions)))
        cursor.skip_tags()
        return OffsetFetchAnswer(throttle_time_ms, tuple(groups))


class _Cursor:
    """Reads the primitive types of Kafka's flexible versions from a buffer, advancing ``pos``."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def uvarint(self) -> int:
        value = shift = 0
        while True:
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    def int16(self) -> int:
        (value,) = _INT16.unpack_from(self.data, self.pos)
        self.pos += 2
        return int(value)

    def int32(self) -> int:
        (value,) = _INT32.unpack_from(self.data, self.pos)
        self.pos += 4
        return int(value)

    def int64(self) -> int:
        (value,) = _INT64.unpack_from(self.data, self.pos)
        self.pos += 8
        return int(value)

    def string(self) -> str | None:
        """A compact (nullable) string: length + 1 as an unsigned varint, 0 for null."""
        length = self.uvarint() - 1
        if length < 0:
            return None
        text = self.data[self.pos : self.pos + length].decode("utf-8")
        self.pos += length
        return text

    def array_length(self) -> int:
        """A compact array's element count (a null array counts as empty)."""
        return max(self.uvarint() - 1, 0)

    def skip_tags(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()  # tag
            size = self.uvarint()  # read first: ``pos += uvarint()`` would add to the pos before the size
            self.pos += size


class OffsetFetchRequest_v8(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 9
    API_VERSION = 8
    RESPONSE_TYPE = OffsetFetchResponse_v8
    SCHEMA = Schema(
        (
            "groups",
            CompactArray(
                ("group_id", CompactString("utf-8")),
                (
                    "topics",
                    CompactArray(
                        ("name", CompactString("utf-8")),
                        ("partition_indexes", CompactArray(Int32)),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("require_stable", Boolean),
        ("tags", TaggedFields),
    )


class OffsetFetchRequest(Request[OffsetFetchRequest_v8]):  # type: ignore[misc]
    API_KEY = 9

    def __init__(self, groups: Mapping[str, Mapping[str, Sequence[int]] | None]) -> None:
        """``groups`` maps each group to its topics and partitions, or to None for every committed topic."""
        self.groups = {
            group: None if topics is None else {topic: list(parts) for topic, parts in topics.items()}
            for group, topics in groups.items()
        }

    def build(self, request_struct_class: type[OffsetFetchRequest_v8]) -> OffsetFetchRequest_v8:
        groups = [
            (
                group,
                None
                if topics is None
                else [(topic, partitions, _NO_TAGS) for topic, partitions in topics.items()],
                _NO_TAGS,
            )
            for group, topics in self.groups.items()
        ]
        return request_struct_class(groups, False, _NO_TAGS)


class ListOffsetsResponse_v7(Response):  # type: ignore[misc]
    API_KEY = 2
    API_VERSION = 7
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                (
                    "partitions",
                    CompactArray(
                        ("partition_index", Int32),
                        ("error_code", Int16),
                        ("timestamp", Int64),
                        ("offset", Int64),
                        ("leader_epoch", Int32),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class ListOffsetsRequest_v7(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 2
    API_VERSION = 7
    RESPONSE_TYPE = ListOffsetsResponse_v7
    SCHEMA = Schema(
        ("replica_id", Int32),
        ("isolation_level", Int8),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                (
                    "partitions",
                    CompactArray(
                        ("partition_index", Int32),
                        ("current_leader_epoch", Int32),
                        ("timestamp", Int64),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class ListOffsetsRequest(Request[ListOffsetsRequest_v7]):  # type: ignore[misc]
    API_KEY = 2

    def __init__(
        self, partitions: Mapping[str, Sequence[int]], *, timestamp: int, isolation_level: int
    ) -> None:
        """``timestamp`` is LATEST (log end offset) or EARLIEST (log start offset) for every partition."""
        self.partitions = {topic: list(parts) for topic, parts in partitions.items()}
        self.timestamp = timestamp
        self.isolation_level = isolation_level

    def build(self, request_struct_class: type[ListOffsetsRequest_v7]) -> ListOffsetsRequest_v7:
        no_epoch = -1
        topics = [
            (topic, [(p, no_epoch, self.timestamp, _NO_TAGS) for p in parts], _NO_TAGS)
            for topic, parts in self.partitions.items()
        ]
        return request_struct_class(-1, self.isolation_level, topics, _NO_TAGS)


def metadata_request(topics: Sequence[str]) -> Any:
    """A Metadata request for exactly these topics that never creates a missing one."""
    return MetadataRequest(list(topics), allow_auto_topic_creation=False)


@dataclass(frozen=True, slots=True)
class Coordinator:
    group: str
    node_id: int
    host: str
    port: int
    error_code: int
    error_message: str | None


@dataclass(frozen=True, slots=True)
class CommittedOffset:
    topic: str
    partition: int
    offset: int | None
    error_code: int


@dataclass(frozen=True, slots=True)
class GroupCommitted:
    group: str
    error_code: int
    partitions: tuple[CommittedOffset, ...]


@dataclass(frozen=True, slots=True)
class ListedOffset:
    topic: str
    partition: int
    error_code: int
    offset: int


@dataclass(frozen=True, slots=True)
class Broker:
    node_id: int
    host: str
    port: int
    rack: str | None


@dataclass(frozen=True, slots=True)
class TopicLayout:
    """One topic of a Metadata answer: ``leaders`` maps each partition to its leader (-1: none)."""

    topic: str
    error_code: int
    leaders: Mapping[int, int]


@dataclass(frozen=True, slots=True)
class ClusterLayout:
    brokers: tuple[Broker, ...]
    topics: tuple[TopicLayout, ...]


def decode_find_coordinator(response: Any) -> tuple[Coordinator, ...]:
    return tuple(
        Coordinator(
            group=str(key),
            node_id=int(node_id),
            host=str(host),
            port=int(port),
            error_code=int(error_code),
            error_message=error_message,
        )
        for key, node_id, host, port, error_code, error_message, _tags in response.coordinators
    )


@dataclass(frozen=True, slots=True)
class OffsetFetchAnswer:
    """A decoded OffsetFetch v8 answer; a committed offset of -1 (nothing committed) is None."""

    throttle_time_ms: int
    groups: tuple[GroupCommitted, ...]


def decode_offset_fetch(response: OffsetFetchAnswer) -> tuple[GroupCommitted, ...]:
    return response.groups


def decode_list_offsets(response: Any) -> tuple[ListedOffset, ...]:
    return tuple(
        ListedOffset(topic=str(name), partition=int(index), error_code=int(error_code), offset=int(offset))
        for name, partitions, _topic_tags in response.topics
        for index, error_code, _timestamp, offset, _epoch, _tags in partitions
    )


def decode_metadata(response: Any) -> ClusterLayout:
    """Reads aiokafka's Metadata responses v1 and later (brokers carry a rack, topics an internal flag)."""
    brokers = tuple(
        Broker(node_id=int(node_id), host=str(host), port=int(port), rack=rack)
        for node_id, host, port, rack, *_ in response.brokers
    )
    topics = tuple(
        TopicLayout(
            topic=str(name),
            error_code=int(error_code),
            leaders={int(partition): int(leader) for _p_error, partition, leader, *_ in partitions},
        )
        for error_code, name, _internal, partitions, *_ in response.topics
    )
    return ClusterLayout(brokers=brokers, topics=topics)


def brokers_only_metadata(brokers: Sequence[Broker]) -> Any:
    """A Metadata response naming only these brokers, to teach aiokafka's client where node ids live."""
    return MetadataResponse_v5(0, [(b.node_id, b.host, b.port, b.rack) for b in brokers], None, -1, [])
