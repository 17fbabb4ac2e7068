"""MATH and MATH500: competition problems with LaTeX answers, graded symbolically.

Rows are `{problem, solution, answer, subject, level, unique_id}` (PRM800K's MATH500 split) or the
original MATH files' `{problem, level: "Level 5", type, solution}`, whose answer is the solution's last
`\\boxed{...}`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bstar_pl.prompt import solution
from bstar_pl.records import Problem
from bstar_pl.tasks import final_answer, grading
from bstar_pl.tasks.loading import Source, load_problems, optional_id, text_field

_LEVEL = re.compile(r"(?:Level\s*)?(\d+)")
# MATH's wording for several answers in any order ("Enter all the solutions, separated by commas").
_ANY_ORDER = re.compile(r"separated by commas|in any order", re.IGNORECASE)


check_steps = None  # a right answer's steps cannot be verified here (the PRM judges them)


def load(source: Source, limit: int | None = None) -> list[Problem]:
    """MATH problems; `solution` is the reference solution's paragraphs as steps, then `# Answer`."""
    return load_problems(source, limit, problem)


def problem(row: Mapping[str, Any]) -> Problem:
    """One row as a Problem (a ValueError names a bad field). `info` keeps level, subject and unique_id."""
    question = text_field(row, "problem")
    reference = row.get("solution") or ""
    if not isinstance(reference, str):
        raise ValueError("field 'solution': expected text")
    if row.get("answer") is not None:
        answer = text_field(row, "answer").strip()
    else:
        answer = (final_answer.last_boxed(reference) or "").strip()
        if not answer:
            raise ValueError("no field 'answer' and no \\boxed{...} answer in field 'solution'")
    info: dict[str, Any] = {}
    if row.get("level") is not None:
        level = row["level"]
        m = _LEVEL.fullmatch(str(level).strip())
        info["level"] = int(m[1]) if m else level  # MATH train has "Level ?"
    subject = row.get("subject") or row.get("type")
    if subject is not None:
        info["subject"] = subject
    if row.get("unique_id") is not None:
        info["unique_id"] = row["unique_id"]
    steps = [block.strip() for block in reference.split("\n\n") if block.strip()]
    return Problem(
        id=optional_id(row, "unique_id", "math", question),
        question=question,
        answer=answer,
        solution=solution(steps, answer) if steps else "",
        info=info,
    )


def extract_answer(text: str) -> str | None:
    """The final answer, found as `final_answer.find` documents (markers first, then the tail)."""
    return final_answer.find(text)


def is_correct(text: str, problem: Problem) -> bool:
    """The response's final answer equals the gold answer symbolically; a list is ordered unless the
    question asks for its values separated by commas. Never raises; bounded in time."""
    ordered = not _ANY_ORDER.search(problem.question)
    return grading.equivalent(extract_answer(text), problem.answer, ordered=ordered)
