"""APPS (Hendrycks et al. 2021): write a program; the reward is that it passes every unit test.

Problems: `question` is the statement, the starter code (if any) and APPS's format instruction; `info` holds
the tests (`inputs`, `outputs`, `fn_name` for call-based problems); `solution` is the first reference program
(if any) as a B-STaR response. A program has no single gold answer, so `answer` only names the grading.
Programs run in `bstar_pl/sandbox.py`; outputs are compared as APPS does (tokens after whitespace and line
normalisation, numbers with a tolerance), except that integers compare exactly and order always matters.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bstar_pl.isolation.sandbox import Job, Limits, Result, run_many
from bstar_pl.prompt import solution as format_solution
from bstar_pl.prompt import split_response
from bstar_pl.records import Problem, RecordError
from bstar_pl.tasks.loading import read_rows

log = logging.getLogger(__name__)

# APPS's test harness runs every program after these imports (less numpy, which costs 0.1 s a program).
HEADER = """import sys, math, heapq, bisect, itertools, collections, functools, random, string, re, time
from itertools import accumulate, product, permutations, combinations
from collections import Counter, OrderedDict, deque, defaultdict, ChainMap
from functools import lru_cache, reduce
from math import sqrt, sin, cos, tan, ceil, fabs, floor, gcd, exp, log, log2
from heapq import heappush, heappop, heapify
from typing import List, Tuple, Dict, Optional, Set
"""
LIMITS = Limits()
_FENCE = re.compile(r"```[ \t]*(python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)
_INT = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


check_steps = None  # a right answer's steps cannot be verified here (the PRM judges them)


def load(source: str | os.PathLike[str] | Iterable[dict[str, Any]], limit: int | None = None) -> list[Problem]:
    """APPS problems from a JSON-lines, JSON (a list of rows) or parquet file, or from rows (e.g. a `datasets`
    dataset). Rows are APPS records; `input_output` and `solutions` may be JSON text (the Hugging Face copy) or
    already decoded (../shared/data/apps_sample.jsonl). Problems without tests are skipped, with a warning."""
    problems, skipped = [], 0
    for row in read_rows(source):
        where, row = row.where, row.data
        if limit is not None and len(problems) >= limit:
            break
        problem = _problem(row, where)
        if problem is None:
            skipped += 1
        else:
            problems.append(problem)
    if skipped:
        log.warning(
            "%s: skipped %d problems without tests", source if isinstance(source, (str, Path)) else "rows", skipped
        )
    return problems


def extract_answer(text: str) -> str | None:
    """The program: the last ```python block anywhere, else the text after `# Answer` (unfenced if fenced).
    A block cut off by the token limit runs to the end of the text."""
    python = [body for lang, body in _FENCE.findall(text) if lang]
    if python:
        code = python[-1]
    else:
        _, answer = split_response(text)
        if answer is None:
            return None
        fenced = _FENCE.findall(answer)
        code = fenced[-1][1] if fenced else answer
    return code.strip("\n") + "\n" if code.strip() else None


def is_correct(text: str, problem: Problem, limits: Limits = LIMITS) -> bool:
    """The program in `text` passes every test of `problem` in the sandbox."""
    return grade([text], [problem], limits, progress=False)[0].passed


def grade(
    texts: Sequence[str],
    problems: Sequence[Problem],
    limits: Limits = LIMITS,
    workers: int | None = None,
    progress: bool = True,
) -> list[Result]:
    """Run the program of each response against its problem's tests, in parallel; why each passed or failed."""
    if len(texts) != len(problems):
        raise ValueError(f"{len(texts)} responses for {len(problems)} problems")
    jobs, where = [], []
    results: list[Result | None] = []
    for text, problem in zip(texts, problems):
        code, n = extract_answer(text), _n_tests(problem)
        if code is None or n == 0:
            results.append(Result("error", 0, n, 0.0, "no program in the response" if n else "no tests"))
        else:
            where.append(len(results))
            results.append(None)
            jobs.append(job(code, problem))
    for i, result in zip(where, run_many(jobs, limits, workers, progress)):
        results[i] = result
    return results  # type: ignore[return-value]


def job(code: str, problem: Problem) -> Job:
    """The sandbox job for one program: APPS's imports, then the program; the tests from `problem.info`."""
    inputs, outputs, fn_name = problem.info["inputs"], problem.info["outputs"], problem.info.get("fn_name")
    if fn_name:
        return Job(HEADER + code, inputs, lambda i, value: same_value(value, outputs[i]), fn_name)
    return Job(HEADER + code, [_text(x) for x in inputs], lambda i, out: same_output(out, _text(outputs[i])))


def _n_tests(problem: Problem) -> int:
    """How many tests `problem.info` holds; 0 (never a vacuous pass) when they are missing or malformed."""
    inputs, outputs = problem.info.get("inputs"), problem.info.get("outputs")
    ok = isinstance(inputs, list) and isinstance(outputs, list) and len(inputs) == len(outputs)
    return len(inputs) if ok else 0  # type: ignore[arg-type]


def same_output(got: str, expected: str) -> bool:
    """Standard-input problems: the same whitespace-separated tokens (line breaks, blank lines and trailing
    spaces do not matter), numbers within APPS's tolerance (numpy.allclose's), integers exactly."""
    a, b = got.split(), expected.split()
    return len(a) == len(b) and all(x == y or _close_tokens(x, y) for x, y in zip(a, b))


def same_value(got: Any, expected: Any) -> bool:
    """Call-based problems: equal JSON values (numbers within tolerance). Some APPS rows wrap each expected
    value in a one-element list (`[[false], [true]]`) and others do not; both are accepted, as in APPS."""
    if _close_values(got, expected):
        return True
    return isinstance(expected, list) and len(expected) == 1 and _close_values(got, expected[0])


def _close_tokens(x: str, y: str) -> bool:
    if not (_NUMBER.fullmatch(x) and _NUMBER.fullmatch(y)):
        return False
    if _INT.fullmatch(x) and _INT.fullmatch(y):
        return int(x) == int(y)  # no float rounding for 19-digit answers
    return _close_numbers(float(x), float(y))


def _close_values(a: Any, b: Any) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close_values(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close_values(a[k], b[k]) for k in a)
    types = {type(a), type(b)}
    if float in types and types <= {int, float}:
        return _close_numbers(float(a), float(b))
    return a == b


def _close_numbers(a: float, b: float) -> bool:
    return a == b or (math.isfinite(a) and math.isfinite(b) and abs(a - b) <= 1e-8 + 1e-5 * abs(b))


def _text(value: Any) -> str:
    """An APPS stdin/stdout text; a few rows store a list of lines instead."""
    return "\n".join(map(str, value)) if isinstance(value, list) else str(value)


def _problem(row: Any, where: str) -> Problem | None:
    """One APPS record as a Problem, None if it has no tests; a RecordError naming `where` if malformed."""
    if not isinstance(row, dict):
        raise RecordError(f"{where}: expected an object, got {type(row).__name__}")
    question, starter = row.get("question"), row.get("starter_code") or ""
    if not isinstance(question, str) or not question.strip():
        raise RecordError(f"{where}: field 'question' must be non-empty text")
    if row.get("problem_id") is None:
        raise RecordError(f"{where}: missing field 'problem_id'")
    tests = _decoded(row, "input_output", where, {})
    solutions = _decoded(row, "solutions", where, [])
    if not isinstance(tests, dict) or not isinstance(solutions, list) or not isinstance(starter, str):
        raise RecordError(f"{where}: 'input_output' must be an object, 'solutions' a list, 'starter_code' text")
    inputs, outputs = tests.get("inputs", []), tests.get("outputs", [])
    if not isinstance(inputs, list) or not isinstance(outputs, list) or len(inputs) != len(outputs):
        raise RecordError(f"{where}: 'input_output' needs lists 'inputs' and 'outputs' of the same length")
    if not inputs:
        return None
    fn_name = tests.get("fn_name") or row.get("fn_name") or None
    split = row.get("apps_split") or row.get("split")
    parts = [question.strip(), f"```python\n{starter.strip()}\n```" if starter.strip() else ""]
    parts.append("Use Call-Based format" if fn_name else "Use Standard Input format")
    reference = next((s for s in solutions if isinstance(s, str) and s.strip()), None)
    return Problem(
        id=f"apps-{split}-{row['problem_id']}" if split else f"apps-{row['problem_id']}",
        question="\n\n".join(p for p in parts if p),
        answer=f"passes all {len(inputs)} tests",
        solution=format_solution([], f"```python\n{reference.strip()}\n```") if reference else "",
        info={
            "inputs": inputs,
            "outputs": outputs,
            "fn_name": fn_name,
            "difficulty": row.get("difficulty"),
            "url": row.get("url"),
        },
    )


def _decoded(row: dict[str, Any], key: str, where: str, default: Any) -> Any:
    """A field that the Hugging Face copy of APPS stores as JSON text ("" when absent)."""
    value = row.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as e:
            raise RecordError(f"{where}: field {key!r} is not valid JSON: {e.msg}") from None
    return value
