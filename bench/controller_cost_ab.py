"""Controller cost side by side: this checkout against an earlier commit, alternating, medians of N rounds.

Absolute CPU and RSS figures move with whatever else the machine runs, so "not worse than before" is
measured in one run: each round runs ``python -m bench.controller_cost`` once from this checkout and once
from a worktree of ``--baseline`` (each checkout's own bench and controller, same devstack, same load), in
alternating order. The medians and the ratios current / baseline go to
``bench/results/controller_cost_ab.{json,md}``.

    python -m bench.controller_cost_ab [--baseline f73d616] [--rounds 3] [--ticks 60]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
WORKTREES = Path("/tmp/queue-autoscaler-bench")
FIGURES = ("cpu_ms_per_tick", "rss_mib", "tick_duration_mean_ms", "kafka_requests_per_tick")


def _say(message: str) -> None:
    print(f"[controller_cost_ab] {message}", file=sys.stderr, flush=True)


def baseline_checkout(revision: str) -> tuple[Path, str]:
    """A detached worktree of ``revision`` (made once, reused), and the commit it resolved to."""
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", f"{revision}^{{commit}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    path = WORKTREES / f"baseline-{commit[:12]}"
    if not (path / "bench" / "controller_cost.py").exists():
        WORKTREES.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], check=True)
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", "--force", str(path), commit], check=True
        )
    return path, commit


def run_once(checkout: Path, ticks: int, out: Path) -> dict[str, Any]:
    """One ``bench.controller_cost`` run of ``checkout`` (its code, this interpreter and its packages)."""
    subprocess.run(
        [sys.executable, "-m", "bench.controller_cost", "--ticks", str(ticks), "--out", str(out)],
        cwd=checkout,
        check=True,
    )
    report: dict[str, Any] = json.loads((out / "controller_cost.json").read_text())
    return report


def summary(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    medians = {
        side: {figure: statistics.median(r[figure] for r in reports) for figure in FIGURES}
        for side, reports in runs.items()
    }
    ratios = {
        figure: round(medians["current"][figure] / medians["baseline"][figure], 3)
        for figure in FIGURES
        if medians["baseline"][figure]
    }
    return {"medians": medians, "ratios_current_over_baseline": ratios}


def markdown(report: dict[str, Any]) -> str:
    medians, ratios = report["medians"], report["ratios_current_over_baseline"]
    rows = [
        f"| {figure} | {medians['baseline'][figure]} | {medians['current'][figure]} | "
        f"{ratios.get(figure, '—')} |"
        for figure in FIGURES
    ]
    return "\n".join(
        [
            "# Controller cost at 1,000 targets, side by side",
            "",
            f"Measured {report['measured_at']}: `{report['command']}`. Baseline {report['baseline']}, "
            f"current {report['current']}; {report['rounds']} rounds, alternating order, medians.",
            "",
            "| figure | baseline | current | current / baseline |",
            "|---|---:|---:|---:|",
            *rows,
            "",
        ]
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.controller_cost_ab",
        description="bench.controller_cost of this checkout and of an earlier commit, alternating in one "
        "run on the devstack; medians and ratios.",
    )
    p.add_argument("--baseline", default="f73d616", help="commit to compare with (default %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="runs of each side (default %(default)s)")
    p.add_argument(
        "--ticks", type=int, default=60, help="ticks in each measured window (default %(default)s)"
    )
    p.add_argument("--out", default=str(RESULTS), help="results directory (default bench/results)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.rounds < 1:
        parser().error(f"--rounds {args.rounds}: at least 1")
    baseline, commit = baseline_checkout(args.baseline)
    current = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "current": []}
    sides = {"baseline": baseline, "current": REPO}
    with tempfile.TemporaryDirectory(prefix="controller-cost-ab-") as scratch:
        for round_ in range(args.rounds):
            order = ("baseline", "current") if round_ % 2 == 0 else ("current", "baseline")
            for side in order:
                _say(f"round {round_ + 1}/{args.rounds}: {side}")
                out = Path(scratch) / f"{side}-{round_}"
                runs[side].append(run_once(sides[side], args.ticks, out))
    report = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.controller_cost_ab", *(argv or sys.argv[1:])]),
        "baseline": commit[:12],
        "current": current[:12],
        "rounds": args.rounds,
        "ticks": args.ticks,
        **summary(runs),
        "runs": {side: [{f: r[f] for f in FIGURES} for r in reports] for side, reports in runs.items()},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "controller_cost_ab.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "controller_cost_ab.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
