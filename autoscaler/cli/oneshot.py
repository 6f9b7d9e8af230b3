"""The one-shot commands: ``decide`` (one decision, explained) and ``lag`` (a group's lag per partition)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from autoscaler import errors
from autoscaler.policy import document
from autoscaler.sources.kafka import offsets, table

EXIT_INVALID = 2

DECIDE_HELP = """\
Reads one JSON object on stdin and writes the decision on stdout; it is the function the controller runs.

  in:  {"annotations": {"kafka-group": "g", "lag-per-replica": "100"}, "current_replicas": 3,
        "partitions": [{"topic": "t", "partition": 0, "committed": 120, "end": 150, "start": 0}],
        "now": "2026-11-26T12:00:00Z", "state": {...}}
  out: {"desired_replicas": 1, "total_lag": 30, "active": true, "reason": "...", "rule": "...",
        "state": {...}}

Annotation keys may be given with or without the queue-autoscaler.dev/ prefix. committed/end may be null
(no committed offset / partition absent from the end offsets); "partitions" null means the lag could
not be read. "now" defaults to the current time; "state" is the previous answer's state, to chain decisions.
Invalid annotations: exit status 2 and every bad key with its value on stderr.
"""


def cmd_decide() -> int:
    try:
        doc = json.load(sys.stdin)
    except json.JSONDecodeError as exc:
        print(f"decide: stdin is not JSON: {exc}", file=sys.stderr)
        return EXIT_INVALID
    try:
        answer = document.decide_document(doc, datetime.now(UTC))
    except errors.PolicyError as exc:
        print("decide: invalid annotations:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_INVALID
    except ValueError as exc:
        print(f"decide: {exc}", file=sys.stderr)
        return EXIT_INVALID
    json.dump(answer, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


async def cmd_lag(args: argparse.Namespace) -> int:
    if not args.bootstrap:
        raise errors.SettingsError("--bootstrap: required (or set QUEUE_AUTOSCALER_KAFKA_BOOTSTRAP)")
    query = offsets.GroupQuery(args.group, tuple(args.topic) or None)
    async with offsets.OffsetReader(args.bootstrap) as reader:
        outcome = (await reader.read(queries=[query]))[query]
    if isinstance(outcome, errors.KafkaError):
        raise outcome
    if args.json:
        rows = [
            {
                "topic": r.topic,
                "partition": r.partition,
                "committed": r.committed,
                "end": r.end,
                "start": r.start,
                "lag": table.tool_lag(r),
            }
            for r in sorted(outcome, key=lambda r: (r.topic, r.partition))
        ]
        known = [row["lag"] for row in rows if isinstance(row["lag"], int)]
        json.dump({"group": args.group, "partitions": rows, "total_lag": sum(known)}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(f"GROUP {args.group}")
        print(table.format_lag_table(outcome))
    return 0
