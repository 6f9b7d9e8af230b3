"""The one-shot ``decide`` command: one decision, explained (``lag`` lives in ``cli.lag``)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

from autoscaler import errors
from autoscaler.policy import document

EXIT_INVALID = 2

DECIDE_HELP = """\
Reads one JSON object on stdin and writes the decision on stdout; it is the function the controller runs.

  in:  {"annotations": {"kafka-group": "g", "lag-per-replica": "100"}, "current_replicas": 3,
        "partitions": [{"topic": "t", "partition": 0, "committed": 120, "end": 150, "start": 0}],
        "now": "2026-11-26T12:00:00Z", "state": {...}}
  out: {"desired_replicas": 1, "total_lag": 30, "active": true, "reason": "...", "rule": "...",
        "state": {...}}

Annotation keys may be given with or without the queue-autoscaler.dev/ prefix. committed/end may be null
(no committed offset / partition absent from the end offsets). A Kafka target needs "partitions": null
means the lag could not be read. HTTP targets: "concurrency" (in-flight + queued), and optionally
"requests_started" and "peak_concurrency" since the previous decision. "now" defaults to the current time;
"state" is the previous answer's state, to chain decisions. Unknown keys, integers beyond int64 and JSON
nested too deeply are refused. Invalid input: exit status 2 and, on stderr, every bad key with its value.
"""


def cmd_decide() -> int:
    try:
        answer = document.decide_document(document.load(sys.stdin.buffer.read()), datetime.now(UTC))
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
