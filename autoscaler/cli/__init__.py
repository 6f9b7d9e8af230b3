"""``queue-autoscaler``: argument parsing and wiring only.

Subcommands: ``run`` (the controller, wired in ``cli.controller``), ``activator`` (the HTTP buffer and
proxy, ``cli.activator``) and the one-shot ``decide`` (``cli.oneshot``) and ``lag`` (``cli.lag``). The
modules here parse flags and connect the library's parts; the behaviour lives in the packages they wire.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from autoscaler import errors, settings
from autoscaler.cli import lag, oneshot
from autoscaler.cli.oneshot import EXIT_INVALID as EXIT_INVALID
from autoscaler.observability import logging as obs_logging
from autoscaler.settings import eventing as eventing_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="queue-autoscaler",
        description="Scale Kubernetes worker Deployments on queue depth (Kafka consumer-group lag and "
        "requests held by the activator), to and from zero. Every flag also reads QUEUE_AUTOSCALER_<FLAG>.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="run the controller",
        description="Watch annotated Deployments, read their lag every tick in batched requests, "
        "decide and patch their scale subresource.",
    )
    settings.add_controller_flags(run)
    activator_command = sub.add_parser(
        "activator",
        help="run the activator (HTTP/CloudEvents buffer and proxy)",
        description="Route requests by Host to annotated Deployments, hold them while the target has no "
        "ready endpoint, wake it at once, forward when a pod is ready.",
    )
    settings.add_activator_flags(activator_command)
    sub.add_parser(
        "decide",
        help="explain one decision: JSON document on stdin, decision on stdout",
        description=oneshot.DECIDE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ingress = sub.add_parser(
        "broker-ingress",
        help="run the broker ingress (POST /<namespace>/<broker> writes CloudEvents to Kafka)",
        description="Accept CloudEvents for Brokers of class queue-autoscaler and write each to the Broker's "
        "topic knative-broker-<namespace>-<name>, answering 202 once Kafka acknowledged it.",
    )
    eventing_settings.add_broker_ingress_flags(ingress)
    dispatcher = sub.add_parser(
        "dispatcher",
        help="run the dispatcher (delivers each Trigger's events; writes Broker and Trigger status)",
        description="Consume each Trigger's events with its own consumer group knative-trigger-<namespace>-"
        "<name>, filter, deliver with retries and dead-lettering, and write Broker and Trigger status.",
    )
    eventing_settings.add_dispatcher_flags(dispatcher)
    sub.add_parser(
        "match",
        help="does a Trigger take this event, and why: JSON document on stdin, verdict on stdout",
        description=eventing_settings.MATCH_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    lag.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    one_shot = args.command in ("decide", "lag", "match")
    obs_logging.configure(log_format="console" if one_shot else "auto", level="warning")
    if one_shot:  # the command's own message says what failed; the libraries' retries are noise here
        logging.getLogger().setLevel(logging.CRITICAL)
    # Each long-running command imports only its own wiring (the controller never loads the activator's
    # or the event broker's modules).
    try:
        if args.command == "decide":
            return oneshot.cmd_decide()
        if args.command == "match":
            from autoscaler.cli import eventing as cli_eventing

            return cli_eventing.cmd_match()
        if args.command == "lag":
            return asyncio.run(lag.run(args))
        if args.command in ("broker-ingress", "dispatcher"):
            from autoscaler.cli import eventing as cli_eventing

            if args.command == "broker-ingress":
                return cli_eventing.run_broker_ingress(eventing_settings.broker_ingress_settings(args))
            return cli_eventing.run_dispatcher(eventing_settings.dispatcher_settings(args))
        if args.command == "run":
            from autoscaler.cli import controller

            return controller.run_controller(settings.controller_settings(args))
        from autoscaler.cli import activator

        return activator.run_activator(settings.activator_settings(args))
    except errors.SettingsError as exc:
        print(f"queue-autoscaler {args.command}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except errors.AutoscalerError as exc:  # Kafka or Kubernetes unreachable or refusing at start-up
        print(f"queue-autoscaler {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
