"""``python -m devstack up|down|status|env`` (devstack/up, down and status call this)."""

from __future__ import annotations

import argparse
import sys

from devstack import stack
from devstack.config import layout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="devstack",
        description="A real single-machine Kafka + Kubernetes stack for queue-autoscaler's tests and demo. "
        "Builds are cached in $QA_CACHE (default ~/.cache/queue-autoscaler); state and logs live in "
        "$QA_DEVSTACK_DIR (default /tmp/queue-autoscaler-devstack).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="build what is missing, start what is not running, wait until ready")
    sub.add_parser("down", help="stop every process and network namespace the stack started")
    sub.add_parser("status", help="show which components run (exit 1 if any is down)")
    again = sub.add_parser("restart", help="stop the named components, then start what is not running")
    again.add_argument("components", nargs="+", help="kubelet, kube-apiserver, kube-controller-manager, ...")
    sub.add_parser("env", help="print the export lines for KUBECONFIG and the Kafka bootstrap")
    args = parser.parse_args(argv)
    stack_layout = layout()
    if args.command == "up":
        try:
            stack.up(stack_layout)
        except (RuntimeError, OSError) as exc:
            print(f"[devstack] up failed: {exc}", file=sys.stderr)
            return 1
        print(stack.exports(stack_layout), end="")
        return 0
    if args.command == "restart":
        try:
            stack.restart(stack_layout, args.components)
        except (RuntimeError, OSError) as exc:
            print(f"[devstack] restart failed: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.command == "down":
        stack.down(stack_layout)
        return 0
    if args.command == "env":
        print(stack.exports(stack_layout), end="")
        return 0
    return 0 if stack.print_status(stack_layout) else 1


if __name__ == "__main__":
    sys.exit(main())
