"""Build hook: ``QUEUE_AUTOSCALER_COMPILE=1`` compiles the activator's request path with mypyc.

Everything else about the package is in pyproject.toml. The compiled modules are the ones every proxied
request runs through; the rest of the package stays pure Python. Without the variable (the default, and
what ``pip install -e .`` does) nothing is compiled, so an edit to a source file always takes effect.
Compiling needs mypy (the dev extra) in the building environment (``pip wheel --no-build-isolation``)
and a C compiler with Python's headers.
"""

import os

from setuptools import setup

# The activator's per-request code: HTTP/1.1 server and client, the pool, header rewriting, the buffer,
# endpoint leases, forwarding and relaying, routing, deadlines, the request handler and its metrics, and the
# model it keys them by. (activator/bodies.py, async generators, is not compilable; messages.py subclasses
# ConnectionError, which compiled classes cannot.)
COMPILED = [
    "autoscaler/model.py",
    "autoscaler/activator/buffer.py",
    "autoscaler/activator/endpoints.py",
    "autoscaler/activator/fields.py",
    "autoscaler/activator/heads.py",
    "autoscaler/activator/http1.py",
    "autoscaler/activator/metrics.py",
    "autoscaler/activator/pool.py",
    "autoscaler/activator/proxy.py",
    "autoscaler/activator/routing.py",
    "autoscaler/activator/server.py",
    "autoscaler/activator/timers.py",
    "autoscaler/activator/upstream.py",
]


def _ext_modules() -> list[object]:
    if os.environ.get("QUEUE_AUTOSCALER_COMPILE") != "1":
        return []
    from mypyc.build import mypycify

    return list(mypycify(COMPILED, opt_level="3"))


setup(ext_modules=_ext_modules())
