"""The activator's compiled form (setup.py, ``QUEUE_AUTOSCALER_COMPILE=1``), built for the benches and tests.

``build()`` makes a wheel of the working tree with the modules setup.py names compiled by mypyc, installs it
(without dependencies: they are the venv's) into a directory of its own, ``$QA_CACHE/compiled/<digest>``;
the digest covers every file of the package, so that directory never serves a module older than its source.
``environment(site)`` runs a process on it: the package comes from there, everything else from the venv.

    python -m devstack.compiled       # builds when needed (about a minute), prints the directory
"""

from __future__ import annotations

import ast
import hashlib
import importlib.machinery
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from devstack.config import REPO_ROOT, layout

# What the wheel is built from: setup.py reads the list of compiled modules, pyproject.toml the rest.
BUILD_FILES = ("setup.py", "pyproject.toml", "README.md")
KEEP_BUILDS = 3
ENV_FLAG = "QUEUE_AUTOSCALER_COMPILED"  # set for a process that must run the compiled form (tests check it)


def modules() -> list[str]:
    """The dotted names of the modules setup.py compiles (its ``COMPILED`` list)."""
    tree = ast.parse((REPO_ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(name, ast.Name) and name.id == "COMPILED" for name in node.targets
        ):
            paths: list[str] = ast.literal_eval(node.value)
            return [path.removesuffix(".py").replace("/", ".") for path in paths]
    raise RuntimeError(f"{REPO_ROOT / 'setup.py'} has no COMPILED list")


def is_compiled(module: object) -> bool:
    """Whether an imported module was loaded from an extension (the compiled form), not from source."""
    origin = getattr(module, "__file__", None) or ""
    return origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def _sources() -> list[Path]:
    package = sorted(
        path
        for path in (REPO_ROOT / "autoscaler").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    )
    return [REPO_ROOT / name for name in BUILD_FILES] + package


def digest() -> str:
    h = hashlib.sha256(f"{sys.version}\n".encode())
    for path in _sources():
        h.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def build() -> Path:
    """The installed compiled form of the working tree, built when no build of these sources exists."""
    builds = layout().cache / "compiled"
    site = builds / digest()
    if (site / "autoscaler").is_dir():
        return site
    _compiler()
    builds.mkdir(parents=True, exist_ok=True)
    print(f"[compiled] building the activator with mypyc into {site} (about a minute)", file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=builds, prefix="build-") as scratch:
        tree = Path(scratch) / "src"
        for path in _sources():
            target = tree / path.relative_to(REPO_ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        env = {**os.environ, "QUEUE_AUTOSCALER_COMPILE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        pip = [sys.executable, "-m", "pip"]
        _run(
            [*pip, "wheel", "-q", "--no-build-isolation", "--no-deps", "-w", f"{scratch}/dist", str(tree)],
            env,
        )
        wheels = list(Path(scratch, "dist").glob("*.whl"))
        _run([*pip, "install", "-q", "--no-deps", "--target", f"{scratch}/site", *map(str, wheels)], env)
        Path(scratch, "site").rename(site)
    _prune(builds, keep=site)
    return site


def _compiler() -> None:
    """gcc (installed from Debian packages by devstack/build-tools when missing) and Python's headers."""
    if shutil.which("gcc") is None:
        _run([str(REPO_ROOT / "devstack" / "build-tools"), "compiler"], dict(os.environ))
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.is_file():
        raise RuntimeError(f"{headers} is missing: mypyc needs Python's headers (Debian: python3.11-dev)")


def _run(argv: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:4])} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-4000:]}"
        )


def _prune(builds: Path, *, keep: Path) -> None:
    old = sorted(
        (
            path
            for path in builds.iterdir()
            if path.is_dir() and path != keep and not path.name.startswith("build-")
        ),
        key=lambda path: path.stat().st_mtime,
    )
    for path in old[: max(0, len(old) - (KEEP_BUILDS - 1))]:
        shutil.rmtree(path, ignore_errors=True)


def runs_compiled(pid: int) -> bool:
    """Whether process ``pid`` has loaded this build's compiled modules (its memory maps name them)."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return any(
        line.split()[-1].endswith(suffixes) and "/compiled/" in line and "/autoscaler/activator/" in line
        for line in maps.splitlines()
        if line.count(" ") >= 5
    )


def environment(site: Path) -> dict[str, str]:
    """Environment variables that make a ``python -m ...`` process import the package from ``site``: first on
    the path, and no current directory put before it (PYTHONSAFEPATH)."""
    return {"PYTHONPATH": str(site), "PYTHONSAFEPATH": "1", ENV_FLAG: "1"}


if __name__ == "__main__":
    try:
        print(build())
    except RuntimeError as exc:
        sys.exit(f"devstack.compiled: {exc}")
