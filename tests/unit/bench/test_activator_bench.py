"""bench.activator's verdict on its own run: figures with failed requests are not a measurement."""

from __future__ import annotations

from typing import Any

from bench import activator


def level(concurrency: int, errors: dict[str, int], rate: int | None = None) -> dict[str, Any]:
    paths = {name: {"errors": errors.get(name, 0)} for name in activator.PATHS}
    return {"concurrency": concurrency, "rate": rate, "rounds": [{"paths": paths}, {"paths": paths}]}


def test_every_path_and_level_with_failed_requests_is_named_and_none_when_all_answered() -> None:
    clean = {"levels": [level(1, {}), level(32, {})], "paced": [level(32, {}, rate=2000)]}
    failing = {
        "levels": [level(1, {}), level(32, {"nginx": 3})],
        "paced": [level(32, {"activator": 10226}, rate=500)],
    }

    assert activator.failed_paths(clean) == []
    assert activator.failed_paths(failing) == [
        "nginx at 32 connections",
        "activator at 32 connections paced at 500/s",
    ]
