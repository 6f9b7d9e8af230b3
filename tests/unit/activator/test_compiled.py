"""The activator's compiled form (setup.py): what its modules must not contain, and which form a run tests.

``make test`` runs this package twice: on the source, and on the compiled build (``make unit-compiled``, with
``QUEUE_AUTOSCALER_COMPILED=1``). mypyc compiles two things in ways the tests showed to be wrong, so the
compiled modules must not hold them: an ``await`` inside an ``except`` block (the process crashed later,
on a freed future), and one ``except ... as name`` reused for exceptions of another type in the same function
(the second is refused with a TypeError).
"""

from __future__ import annotations

import ast
import importlib
import os
from pathlib import Path

import pytest

from devstack import compiled
from devstack.config import REPO_ROOT


def _source(module: str) -> Path:
    return REPO_ROOT / (module.replace(".", "/") + ".py")


def _awaits_in_except_blocks(tree: ast.AST) -> list[int]:
    lines = []
    for handler in ast.walk(tree):
        if isinstance(handler, ast.ExceptHandler):
            for statement in handler.body:
                lines += [
                    node.lineno
                    for node in ast.walk(statement)
                    if isinstance(node, ast.Await | ast.AsyncWith | ast.AsyncFor)
                ]
    return lines


def _reused_exception_names(tree: ast.AST) -> list[str]:
    found = []
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            caught: dict[str, set[str]] = {}
            for node in ast.walk(function):
                if isinstance(node, ast.ExceptHandler) and node.name and node.type is not None:
                    caught.setdefault(node.name, set()).add(ast.unparse(node.type))
            found += [
                f"{function.name}: {name} for {sorted(types)}"
                for name, types in caught.items()
                if len(types) > 1
            ]
    return found


def test_setup_py_compiles_the_request_path() -> None:
    names = compiled.modules()
    assert {"autoscaler.activator.http1", "autoscaler.activator.server", "autoscaler.activator.pool"} <= set(
        names
    )
    assert all(_source(name).is_file() for name in names)


@pytest.mark.parametrize("module", compiled.modules())
def test_a_compiled_module_awaits_nothing_in_an_except_block_and_reuses_no_exception_name(
    module: str,
) -> None:
    tree = ast.parse(_source(module).read_text())
    assert _awaits_in_except_blocks(tree) == [], f"{module}: await inside an except block (lines)"
    assert _reused_exception_names(tree) == [], f"{module}: one except-name for several exception types"


def test_the_checks_find_what_they_look_for() -> None:
    bad = ast.parse(
        "async def f():\n"
        "    try:\n        pass\n"
        "    except KeyError as exc:\n        await g()\n"
        "    except ValueError as exc:\n        pass\n"
    )
    assert _awaits_in_except_blocks(bad) == [5]
    assert _reused_exception_names(bad) == ["f: exc for ['KeyError', 'ValueError']"]


@pytest.mark.parametrize("module", compiled.modules())
def test_this_run_imports_the_form_it_is_meant_to_test(module: str) -> None:
    expected = os.environ.get(compiled.ENV_FLAG) == "1"
    loaded = importlib.import_module(module)
    assert compiled.is_compiled(loaded) is expected, f"{module} loaded from {loaded.__file__}"
