"""The package as the image ships it: the wheel built from the repository and installed into a fresh
virtualenv with the pinned constraints, then every command run from that virtualenv.

These are the Dockerfile's build steps. There is no Docker engine on the machines the tests run on, so the
image itself is not built here; its build stage does what this test does: copy pyproject.toml,
constraints.txt, README.md and autoscaler/ (the whole build context .dockerignore lets through), build the
wheel, ``pip install -c constraints.txt`` it into a virtualenv and run ``queue-autoscaler``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from autoscaler import cli
from devstack.config import REPO_ROOT

pytestmark = pytest.mark.timeout(600)

BUILD_CONTEXT = ("pyproject.toml", "constraints.txt", "README.md", "autoscaler")
SUBCOMMANDS = ("run", "activator", "broker-ingress", "dispatcher", "decide", "match", "lag")


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    workdir: Path  # outside the repository, so nothing is imported from the source tree

    @property
    def command(self) -> Path:
        return self.venv / "bin" / "queue-autoscaler"

    def run(self, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=self.workdir,
            env=clean_env(),
        )


def clean_env() -> dict[str, str]:
    """The environment without this checkout's settings: no QUEUE_AUTOSCALER_*, PYTHONPATH or virtualenv."""
    drop = ("QUEUE_AUTOSCALER_", "PYTHONPATH", "VIRTUAL_ENV", "KUBECONFIG")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["COLUMNS"] = "200"  # argparse wraps help at the terminal width; keep each flag on one line
    return env


def step(argv: list[str], *, cwd: Path, what: str, timeout: float) -> None:
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd, env=clean_env()
    )
    assert done.returncode == 0, (
        f"{what} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("packaging")
    context = root / "context"
    context.mkdir()
    # A copy of the build context: building in the checkout would write build/ and *.egg-info there, under
    # the feet of anyone else using it.
    for name in BUILD_CONTEXT:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, context / name)
    dist = root / "dist"
    step(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(context)],
        cwd=root,
        what="python -m build --wheel",
        timeout=300,
    )
    wheels = sorted(dist.glob("queue_autoscaler-*.whl"))
    assert len(wheels) == 1, f"expected one wheel, found {wheels}"
    venv = root / "venv"
    step([sys.executable, "-m", "venv", str(venv)], cwd=root, what="python -m venv", timeout=120)
    step(
        [str(venv / "bin" / "pip"), "install", "-c", str(context / "constraints.txt"), str(wheels[0])],
        cwd=root,
        what="pip install -c constraints.txt <wheel>",
        timeout=420,
    )
    workdir = root / "work"
    workdir.mkdir()
    return Installed(wheels[0], venv, workdir)


def test_the_wheel_holds_the_package_with_its_typing_marker_and_the_console_script(
    installed: Installed,
) -> None:
    import zipfile

    names = zipfile.ZipFile(installed.wheel).namelist()
    assert "autoscaler/cli/__init__.py" in names
    assert "autoscaler/py.typed" in names
    assert not [n for n in names if n.startswith(("tests/", "devstack/", "bench/"))]
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert (
        "queue-autoscaler = autoscaler.cli:main"
        in zipfile.ZipFile(installed.wheel).read(entry_points).decode()
    )

    where = installed.run(
        str(installed.venv / "bin" / "python"), "-c", "import autoscaler; print(autoscaler.__file__)"
    )
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(installed.venv), where.stdout


def option_strings(parser: argparse.ArgumentParser) -> list[str]:
    return [s for action in parser._actions for s in action.option_strings if s.startswith("--")]


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("queue-autoscaler has no subcommands")


def test_the_installed_command_and_every_subcommand_answer_help_with_every_flag(installed: Installed) -> None:
    top = installed.run(str(installed.command), "--help")
    assert top.returncode == 0, top.stderr
    for name in SUBCOMMANDS:
        assert name in top.stdout

    # The flags the source defines, each of which the installed program's help must show.
    expected = subparsers(cli.build_parser())
    assert set(expected) == set(SUBCOMMANDS)
    for name in SUBCOMMANDS:
        done = installed.run(str(installed.command), name, "--help")
        assert done.returncode == 0, f"{name} --help: {done.stderr}"
        missing = [flag for flag in option_strings(expected[name]) if flag not in done.stdout]
        assert not missing, f"`queue-autoscaler {name} --help` does not mention {missing}:\n{done.stdout}"
    run_help = installed.run(str(installed.command), "run", "--help").stdout
    for flag in ("--kafka-bootstrap", "--leader-election", "--lease-duration", "--identity", "--interval"):
        assert flag in run_help


def test_the_installed_decide_command_answers_a_sample_document(installed: Installed) -> None:
    document = {
        "annotations": {
            "kafka-group": "billing",
            "lag-per-replica": "100",
            "offset-reset-policy": "earliest",
        },
        "current_replicas": 0,
        "partitions": [
            {"topic": "billing", "partition": p, "committed": committed, "end": 125, "start": 25}
            for p, committed in enumerate([None, 50, 0])
        ],
        "now": "2026-11-26T12:00:00Z",
    }
    done = installed.run(str(installed.command), "decide", stdin=json.dumps(document))
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    # No committed offset, earliest: end - start = 100; then 125 - 50 = 75; committed below the log start:
    # 125 - max(0, 25) = 100. 275 records at 100 per replica: 3.
    assert answer["total_lag"] == 275
    assert answer["desired_replicas"] == 3
    assert answer["active"] is True

    bad = installed.run(
        str(installed.command),
        "decide",
        stdin=json.dumps({**document, "annotations": {"kafka-group": "g", "lag-per-replica": "0"}}),
    )
    assert bad.returncode == cli.EXIT_INVALID
    assert "lag-per-replica" in bad.stderr
