"""Encoding and decoding of the flexible-version requests the offset reader sends."""

from __future__ import annotations

import struct

import pytest
from aiokafka.protocol.metadata import MetadataRequest_v5, MetadataResponse_v5

from autoscaler.sources.kafka import protocol

BROKER_4_3 = {2: (1, 11), 3: (0, 13), 9: (1, 10), 10: (0, 6)}


def test_find_coordinator_v4_batches_every_group_key_in_one_request() -> None:
    request = protocol.FindCoordinatorRequest(["g", "orders"]).prepare(BROKER_4_3)

    assert isinstance(request, protocol.FindCoordinatorRequest_v4)
    # key type 0 (group), compact array of 2 (varint 3), compact strings (length + 1), no tagged fields
    assert request.encode() == b"\x00\x03\x02g\x07orders\x00"


def test_find_coordinator_v4_answers_decode_and_skip_unknown_tagged_fields() -> None:
    answer = (
        struct.pack(">i", 0)
        + b"\x03"
        + b"\x02g"
        + struct.pack(">i", 1)
        + b"\x0bbroker-one"
        + struct.pack(">ih", 9092, 0)
        + b"\x00"
        + b"\x01\x00\x02xy"  # one tagged field: tag 0, two bytes
        + b"\x02h"
        + struct.pack(">i", -1)
        + b"\x01"
        + struct.pack(">ih", -1, 15)
        + b"\x05busy"
        + b"\x00"
        + b"\x00"
    )

    decoded = protocol.decode_find_coordinator(protocol.FindCoordinatorResponse_v4.decode(answer))

    assert decoded == (
        protocol.Coordinator("g", node_id=1, host="broker-one", port=9092, error_code=0, error_message=None),
        protocol.Coordinator("h", node_id=-1, host="", port=-1, error_code=15, error_message="busy"),
    )


def test_offset_fetch_v8_carries_many_groups_and_null_topics_for_all_topics() -> None:
    request = protocol.OffsetFetchRequest({"a": None, "b": {"t": [0, 1]}}).prepare(BROKER_4_3)

    assert isinstance(request, protocol.OffsetFetchRequest_v8)
    assert (
        protocol.OffsetFetchRequest({"a": None}).prepare(BROKER_4_3).encode() == b"\x02\x02a\x00\x00\x00\x00"
    )
    decoded = protocol.OffsetFetchRequest_v8.decode(request.encode())
    assert decoded.groups == [("a", None, {}), ("b", [("t", [0, 1], {})], {})]
    assert decoded.require_stable is False


def test_offset_fetch_v8_answers_decode_with_minus_one_as_no_committed_offset() -> None:
    answer = protocol.OffsetFetchResponse_v8(
        0,
        [
            ("g", [("t", [(0, 42, 3, "", 0, {}), (1, -1, -1, None, 0, {})], {})], 0, {}),
            ("h", [], 30, {}),
        ],
        {},
    ).encode()

    decoded = protocol.decode_offset_fetch(protocol.OffsetFetchResponse_v8.decode(answer))

    assert decoded == (
        protocol.GroupCommitted(
            "g",
            error_code=0,
            partitions=(
                protocol.CommittedOffset("t", 0, offset=42, error_code=0),
                protocol.CommittedOffset("t", 1, offset=None, error_code=0),
            ),
        ),
        protocol.GroupCommitted("h", error_code=30, partitions=()),
    )


def test_a_broker_without_offset_fetch_v8_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(NotImplementedError):
        protocol.OffsetFetchRequest({"a": None}).prepare({9: (1, 7)})


def test_list_offsets_v7_asks_one_timestamp_for_every_partition_without_a_leader_epoch() -> None:
    request = protocol.ListOffsetsRequest(
        {"t": [0, 2], "u": [1]}, timestamp=protocol.EARLIEST, isolation_level=protocol.READ_COMMITTED
    ).prepare(BROKER_4_3)

    assert isinstance(request, protocol.ListOffsetsRequest_v7)
    decoded = protocol.ListOffsetsRequest_v7.decode(request.encode())
    assert (decoded.replica_id, decoded.isolation_level) == (-1, 1)
    assert decoded.topics == [("t", [(0, -1, -2, {}), (2, -1, -2, {})], {}), ("u", [(1, -1, -2, {})], {})]


def test_list_offsets_v7_answers_decode_per_partition_with_error_codes() -> None:
    answer = protocol.ListOffsetsResponse_v7(
        0, [("t", [(0, 0, -1, 1000, 5, {}), (1, 6, -1, -1, -1, {})], {})], {}
    ).encode()

    decoded = protocol.decode_list_offsets(protocol.ListOffsetsResponse_v7.decode(answer))

    assert decoded == (
        protocol.ListedOffset("t", 0, error_code=0, offset=1000),
        protocol.ListedOffset("t", 1, error_code=6, offset=-1),
    )


def test_metadata_requests_never_create_missing_topics() -> None:
    request = protocol.metadata_request(["t"]).prepare(BROKER_4_3)

    assert isinstance(request, MetadataRequest_v5)
    assert (request.topics, request.allow_auto_topic_creation) == (["t"], False)


def test_metadata_answers_decode_to_leaders_per_partition_and_topic_errors() -> None:
    answer = MetadataResponse_v5(
        0,
        [(1, "h1", 9092, None), (2, "h2", 9093, "rack-b")],
        "cluster",
        1,
        [(0, "t", False, [(0, 0, 2, [2], [2], []), (5, 1, -1, [1], [], [1])]), (3, "gone", False, [])],
    ).encode()

    decoded = protocol.decode_metadata(MetadataResponse_v5.decode(answer))

    assert decoded == protocol.ClusterLayout(
        brokers=(protocol.Broker(1, "h1", 9092, None), protocol.Broker(2, "h2", 9093, "rack-b")),
        topics=(
            protocol.TopicLayout("t", error_code=0, leaders={0: 2, 1: -1}),
            protocol.TopicLayout("gone", error_code=3, leaders={}),
        ),
    )


def test_a_brokers_only_answer_names_the_brokers_and_no_topic() -> None:
    brokers = [protocol.Broker(1, "h1", 9092, None)]

    layout = protocol.decode_metadata(protocol.brokers_only_metadata(brokers))

    assert layout == protocol.ClusterLayout(brokers=tuple(brokers), topics=())


def test_offset_fetch_v8_answers_with_many_groups_decode_exactly() -> None:
    no_tags: dict[int, bytes] = {}
    groups = [
        (
            f"group-{i:04d}",
            [(f"topic-{i % 7}", [(p, 100 * i + p, 1, "m", 0, no_tags) for p in range(3)], no_tags)],
            0,
            no_tags,
        )
        for i in range(1000)  # more than 127 elements: multi-byte varint lengths
    ]
    answer = protocol.OffsetFetchResponse_v8(5, groups, {}).encode()

    decoded = protocol.OffsetFetchResponse_v8.decode(answer)

    assert decoded.throttle_time_ms == 5
    assert len(decoded.groups) == 1000
    assert decoded.groups[999] == protocol.GroupCommitted(
        "group-0999",
        error_code=0,
        partitions=tuple(
            protocol.CommittedOffset("topic-5", p, offset=99900 + p, error_code=0) for p in range(3)
        ),
    )


def test_offset_fetch_v8_answers_skip_tagged_fields_by_their_size() -> None:
    # Built by hand: tagged fields are (tag, size, bytes) per the protocol spec.
    answer = bytes.fromhex(
        "00000000"  # throttle_time_ms
        "02"
        "0267"  # 1 group: "g"
        "02"
        "0274"  # 1 topic: "t"
        "02"
        "00000000"
        "0000000000000007"
        "00000000"
        "00"
        "0000"  # partition 0, offset 7, null metadata
        "01"
        "03"
        "02"
        "abcd"  # partition tags: one field, tag 3, 2 bytes
        "00"  # topic tags
        "0000"
        "00"  # group error code, group tags
        "01"
        "05"
        "01"
        "ff"  # top-level tags: one field, tag 5, 1 byte
    )

    decoded = protocol.OffsetFetchResponse_v8.decode(answer)

    assert decoded.groups == (
        protocol.GroupCommitted("g", error_code=0, partitions=(protocol.CommittedOffset("t", 0, 7, 0),)),
    )
