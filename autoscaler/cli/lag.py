"""``queue-autoscaler lag``: a consumer group's lag per partition, read with the controller's own reader.

The table keeps the columns of Kafka's ``kafka-consumer-groups --describe`` for comparison, and adds the
lag the controller scales on (``CONTROLLER-LAG``: log start counted, the reset policy applied to
partitions without a commit), each with its total.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from autoscaler import errors, settings
from autoscaler.cli import lag_sources
from autoscaler.model import PartitionOffsets
from autoscaler.policy import lag as policy_lag
from autoscaler.policy.annotations import OffsetResetPolicy
from autoscaler.sources.kafka import offsets

HEADERS = (
    "TOPIC",
    "PARTITION",
    "CURRENT-OFFSET",
    "LOG-END-OFFSET",
    "LAG",
    "LOG-START-OFFSET",
    "CONTROLLER-LAG",
)


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "lag",
        help="show a consumer group's lag per partition, like kafka-consumer-groups --describe",
        description="Read one consumer group's committed offsets and its partitions' end and start offsets "
        "with the same batched reads the controller uses. LAG is Kafka's figure (log end - committed); "
        "CONTROLLER-LAG is what the controller scales on.",
    )
    parser.add_argument("--group", help="Kafka consumer group")
    parser.add_argument(
        "--topic", action="append", default=[], help="topic (repeatable); default: every committed topic"
    )
    parser.add_argument(
        "--connection",
        default="default",
        help="Kafka connection of the connections file to read through (default: default)",
    )
    settings.add_connections_flags(parser, bootstrap_flag="--bootstrap")
    parser.add_argument(
        "--offset-reset-policy",
        default="latest",
        choices=[p.value for p in OffsetResetPolicy],
        help="how CONTROLLER-LAG counts a partition without a committed offset (the target's annotation)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    lag_sources.add_arguments(parser)


def tool_lag(row: PartitionOffsets) -> int | None:
    """Log end offset minus committed offset, as Kafka's tool shows it; None when either is unknown."""
    if row.committed is None or row.end is None:
        return None
    return row.end - row.committed


def controller_lag(row: PartitionOffsets, reset: OffsetResetPolicy) -> int:
    """The lag the controller counts for this partition (DESIGN.md "Lag of one partition")."""
    return policy_lag.partition_lag(row, offset_reset_policy=reset, scale_to_zero_on_invalid_offset=False)


def format_lag_table(
    rows: Iterable[PartitionOffsets], *, reset: OffsetResetPolicy = OffsetResetPolicy.LATEST
) -> str:
    """One line per partition, sorted, '-' for unknown values, then a TOTAL line: Kafka's total of the known
    lags ('-' when no partition has one) and the controller's total."""
    ordered = sorted(rows, key=lambda r: (r.topic, r.partition))
    lags = [tool_lag(r) for r in ordered]
    known = [lag for lag in lags if lag is not None]
    ours = [controller_lag(r, reset) for r in ordered]
    lines = [HEADERS]
    lines += [
        (r.topic, str(r.partition), _cell(r.committed), _cell(r.end), _cell(lag), _cell(r.start), str(own))
        for r, lag, own in zip(ordered, lags, ours, strict=True)
    ]
    total = str(sum(known)) if known or not ordered else "-"
    lines.append(("TOTAL", "", "", "", total, "", str(sum(ours))))
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADERS))]
    return "\n".join(
        " ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def lag_document(group: str, rows: Sequence[PartitionOffsets], reset: OffsetResetPolicy) -> dict[str, Any]:
    ordered = sorted(rows, key=lambda r: (r.topic, r.partition))
    partitions = [
        {
            "topic": r.topic,
            "partition": r.partition,
            "committed": r.committed,
            "end": r.end,
            "start": r.start,
            "lag": tool_lag(r),
            "controller_lag": controller_lag(r, reset),
        }
        for r in ordered
    ]
    return {
        "group": group,
        "partitions": partitions,
        "total_lag": sum(lag for r in ordered if (lag := tool_lag(r)) is not None),
        "controller_total_lag": sum(controller_lag(r, reset) for r in ordered),
        "offset_reset_policy": reset.value,
    }


def no_commits(group: str) -> str:
    return f"group {group!r} has no committed offsets: name its topics with --topic to see their lag"


async def run(args: argparse.Namespace) -> int:
    if lag_sources.wanted(args):
        return await lag_sources.cmd(args)
    if not args.group:
        raise errors.SettingsError(
            "--group (Kafka), --rabbitmq-queues, --rabbitmq-queue-pattern, --redis-stream or --nats-stream: "
            "one of them is required"
        )
    known = settings.connections_settings(args)
    if args.connection == "default" and "default" not in known.kafka:
        raise errors.SettingsError(
            "--bootstrap: required (or set QUEUE_AUTOSCALER_KAFKA_BOOTSTRAP, or give --connections with a "
            "'default' Kafka connection, or --connection NAME)"
        )
    target = known.kafka_connection(args.connection)
    reset = OffsetResetPolicy(args.offset_reset_policy)
    rows = await offsets.describe_lag(target=target, group=args.group, topics=tuple(args.topic))
    document = lag_document(args.group, rows, reset)
    if args.json:
        if not rows and not args.topic:
            document["note"] = no_commits(args.group)
        json.dump(document, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"GROUP {args.group} (connection {target.name!r}, {target.bootstrap_servers})")
    if not rows and not args.topic:
        print(no_commits(args.group))
        return 0
    print(format_lag_table(rows, reset=reset))
    print(
        "LAG: Kafka's figure (log end - committed; '-' without a commit). "
        "CONTROLLER-LAG: what the controller scales on (records below the log start not counted; "
        f"no commit: offset-reset-policy {reset.value})."
    )
    return 0


def _cell(value: int | None) -> str:
    return "-" if value is None else str(value)
