"""Log lines stay whole when several processes share one stderr (the multi-process activator's children)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

LINES = 3000
WRITER = f"""
import structlog
from autoscaler.observability import logging
logging.configure(log_format="json")
log = structlog.get_logger("t")
for n in range({LINES}):
    log.info("line", n=n, padding="x" * (n % 300))
"""


def test_two_processes_logging_to_one_file_never_split_each_others_lines(tmp_path: Path) -> None:
    shared = tmp_path / "stderr.log"
    with shared.open("ab") as out:
        writers = [
            subprocess.Popen([sys.executable, "-c", WRITER], stderr=out, cwd=Path(__file__).parents[3])
            for _ in range(2)
        ]
        codes = [writer.wait(timeout=60) for writer in writers]
    assert codes == [0, 0]

    lines = shared.read_text().splitlines()
    broken = [line for line in lines if not _is_json(line)]
    assert broken == []
    assert len(lines) == 2 * LINES


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True
