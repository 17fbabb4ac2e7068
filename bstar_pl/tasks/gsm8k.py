"""GSM8K: grade-school word problems with an integer answer.

Rows are `{question, answer}` with the rationale ending `#### n` (openai/grade-school-math), or
`{question, ground_truth}` ending `A: n` (its example_model_solutions file). Answers may carry thousands
separators (`#### 1,450,000`) and signs; grading is numeric through the math grader. An optional integer
`level` goes to `Problem.info["level"]`, by which evaluation splits its metrics: any file of such rows, e.g.
arithmetic written for an instruct model (`curriculum.write_rows`), is graded by its free-form final number.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bstar_pl.prompt import solution
from bstar_pl.records import Problem
from bstar_pl.tasks import final_answer, grading
from bstar_pl.tasks.loading import Source, load_problems, optional_id, text_field

_CALCULATOR = re.compile(r"<<[^<>]*>>")  # "16 - 3 = <<16-3=13>>13": the annotation a calculator filled in
# Arithmetic left to do: an operator between two numbers ("4 + 8", "3*5", "2 × (4"); a sign alone is none.
_UNEVALUATED = re.compile(r"\d\s*(?:[-+*/×÷^]|\\times|\\cdot|\\div)\s*[-(]?\s*\d")
_NUMBER_WITH_UNIT = re.compile(r"(-?[\d,]*\.?\d+)\s*[A-Za-z][A-Za-z ]*")  # "18 dollars"


check_steps = None  # a right answer's steps cannot be verified here (the PRM judges them)


def load(source: Source, limit: int | None = None) -> list[Problem]:
    """GSM8K problems; `solution` is the rationale in B-STaR format (one step per line, no annotations)."""
    return load_problems(source, limit, problem)


def problem(row: Mapping[str, Any]) -> Problem:
    """One row as a Problem (a ValueError names a bad field)."""
    question = text_field(row, "question")
    if "answer" not in row and "ground_truth" in row:
        rationale, sep, final = text_field(row, "ground_truth").rpartition("\nA:")
        if not sep:
            raise ValueError("field 'ground_truth': no final 'A: <answer>' line")
    else:
        rationale, sep, final = text_field(row, "answer").rpartition("####")
        if not sep:
            raise ValueError("field 'answer': no final '#### <answer>' line")
    answer = final.strip().replace(",", "")
    if not answer:
        raise ValueError("the final answer is empty")
    steps = [line.strip() for line in _CALCULATOR.sub("", rationale).splitlines() if line.strip()]
    level = row.get("level")
    if level is not None and (isinstance(level, bool) or not isinstance(level, int)):
        raise ValueError(f"field 'level': expected an integer, got {level!r}")
    return Problem(
        id=optional_id(row, "id", "gsm8k", question),
        question=question,
        answer=answer,
        solution=solution(steps, answer),
        info={} if level is None else {"level": level},
    )


def extract_answer(text: str) -> str | None:
    """The final answer as `final_answer.find` finds it (`####` and `A:` among its markers), a trailing
    unit dropped; of a relation ("11 + 4 = 15"), the number it arrives at."""
    answer = final_answer.find(text)
    if answer is not None and "=" in answer:
        answer = answer.rpartition("=")[2].strip() or None
    if answer is not None and len(answer) <= 100 and (m := _NUMBER_WITH_UNIT.fullmatch(answer)):
        return m[1]
    return answer


def is_correct(text: str, problem: Problem) -> bool:
    """The response's final answer equals the gold number. An answer still holding arithmetic ("4 + 8 + 6")
    is wrong even where its value is right: the question asked for the number, and a policy rewarded for
    restating the question's expression learns to do just that. Never raises; bounded in time."""
    answer = extract_answer(text)
    return answer is not None and not _UNEVALUATED.search(answer) and grading.equivalent(answer, problem.answer)
