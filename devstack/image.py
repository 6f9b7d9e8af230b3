"""The project's container image, built and run with buildah (devstack/build-image) in the cache's storage.

``build`` runs devstack/build-image (cached: the second build reuses the base and every unchanged layer);
``buildah`` is the command line with the storage options every call must share; ``Container`` runs
commands in a working container of the image as buildah run does: chroot isolation, host network.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from devstack.config import DEVSTACK_DIR, Layout

DEFAULT_TAG = "localhost/queue-autoscaler:dev"
IMAGE_USER = "10001:10001"  # the Dockerfile's non-root user


def buildah(layout: Layout, *args: str) -> list[str]:
    return [
        "buildah",
        "--root", str(layout.cache / "image" / "storage"),
        "--runroot", str(layout.run / "buildah-run"),
        "--storage-driver", "vfs",
        *args,
    ]  # fmt: skip


def build(layout: Layout, tag: str = DEFAULT_TAG, *, timeout: float = 2400) -> str:
    """Builds the image (see devstack/build-image); raises with the build's output on failure."""
    done = subprocess.run(
        [str(DEVSTACK_DIR / "build-image"), tag], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"devstack/build-image failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return done.stdout.strip().splitlines()[-1]


def size_bytes(layout: Layout, tag: str) -> int:
    done = subprocess.run(
        buildah(layout, "inspect", "--type", "image", "--format", "{{.Docker.Size}}", tag),
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.strip() or 0)


@dataclass(frozen=True)
class Container:
    layout: Layout
    name: str

    def argv(
        self,
        command: Sequence[str],
        *,
        user: str = IMAGE_USER,
        env: Mapping[str, str] | None = None,
        volumes: Mapping[Path, str] | None = None,
    ) -> list[str]:
        """``buildah run`` of ``command`` in this container, as ``user``, on the host network."""
        options = ["--isolation", "chroot", "--network", "host", "--user", user]
        for key, value in (env or {}).items():
            options += ["--env", f"{key}={value}"]
        for host_path, inside in (volumes or {}).items():
            options += ["--volume", f"{host_path}:{inside}:ro"]
        return buildah(self.layout, "run", *options, self.name, "--", *command)


@contextlib.contextmanager
def container(layout: Layout, tag: str) -> Iterator[Container]:
    """A working container of ``tag`` for the block, removed afterwards."""
    done = subprocess.run(
        buildah(layout, "from", "--pull-never", tag), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"buildah from {tag} failed: {done.stderr.strip()}")
    name = done.stdout.strip().splitlines()[-1]
    try:
        yield Container(layout, name)
    finally:
        subprocess.run(buildah(layout, "rm", name), capture_output=True, check=False)
