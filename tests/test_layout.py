"""The package keeps its house plan: files short enough to read in one sitting, functions that fit on a screen, and
the loop's `run` showing a whole iteration (read with `ast`; `pytest -s` prints the sizes)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "bstar_pl"
FILE_LIMIT, FUNCTION_LIMIT, LOOP_LIMIT = 300, 60, 80


def functions(tree: ast.AST, prefix: str = "") -> list[tuple[str, int]]:
    """(qualified name, lines) of every function and method, nested ones included."""
    found = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found.append((prefix + node.name, node.end_lineno - node.lineno + 1))
            found += functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            found += functions(node, f"{prefix}{node.name}.")
    return found


def test_no_long_file_or_function_and_a_short_loop() -> None:
    files = sorted(ROOT.rglob("*.py"))
    lines = {p.relative_to(ROOT.parent): len(p.read_text().splitlines()) for p in files}
    long_files = {str(p): n for p, n in lines.items() if n > FILE_LIMIT}
    long_functions = {
        f"{p.relative_to(ROOT.parent)}:{name}": n
        for p in files
        for name, n in functions(ast.parse(p.read_text()))
        if n > FUNCTION_LIMIT
    }
    loop = dict(functions(ast.parse((ROOT / "loop.py").read_text())))["run"]
    sizes = sorted(lines.values())
    print(f"\n{len(files)} files, median {sizes[len(sizes) // 2]} lines, largest {sizes[-1]}; loop.run {loop} lines")
    assert not long_files, long_files
    assert not long_functions, long_functions
    assert loop <= LOOP_LIMIT


def test_the_loop_calls_every_phase_in_order() -> None:
    """A reader of `run` sees the iteration: search, sample, score, select, train, evaluate, in that order (P0's
    evaluation comes first)."""
    tree = ast.parse((ROOT / "loop.py").read_text())
    run = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run")
    calls = sorted(
        (n.lineno, n.col_offset, n.func.id)
        for n in ast.walk(run)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    )
    phases = ("search", "sample", "score", "select", "train", "evaluate")
    assert [name for _, _, name in calls if name in phases] == ["evaluate", *phases]
