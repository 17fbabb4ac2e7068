"""Where a response's final answer is found: the markers in their order, the fallback over the tail, and
the labelled cases of tests/data/grading_cases.jsonl (real answer formats), each graded as labelled."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from bstar_pl.records import Problem
from bstar_pl.tasks import arc, final_answer, grading, gsm8k, math

CASES = Path(__file__).parent / "data" / "grading_cases.jsonl"
TASKS = {"math": math, "gsm8k": gsm8k, "arc": arc}


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        # 1. the B-STaR block beats everything after it
        ("\\boxed{1}\n#### 3\nThe answer is 4.\n\n# Answer\n\n2", "2"),
        # 2. the last complete box beats ####, phrases and the tail
        ("#### 3\nThe answer is 4. So \\boxed{5}, and 6.", "5"),
        ("The integers are \\boxed{-2} and \\boxed{1}.", "-2, 1"),  # one list
        ("So $\\boxed{15\\frac{39}{40}},$ or $\\boxed{\\frac{639}{40}}$ inches.", "\\frac{639}{40}"),  # alternatives
        # 3. GSM8K's last line beats phrases; a Markdown heading is no answer
        ("The answer is 4.\n#### 3", "3"),
        ("#### 1. Set up the equation\nSo x = 5.\n\nThe answer is 5.", "5"),
        ("#### Step 2: add\nWe get 3 + 4 = 7.", "7"),
        # 4. the last answer phrase
        ("The answer is 3. Wait, no: the answer is 4.", "4"),
        ("Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.", "\\frac{1}{2}"),
        ("Final Answer: the area of the square is 42.", "42"),
        ("Final Answer: The volume of $ABCDEFGH$ is 120. I hope it is correct.", "120"),
        ("**Answer:** 7", "7"),
        ("### Final Answer\n\n$x = 4$", "x = 4"),
        ("Answer $ 7 $", "7"),
        ("Answer \\[ 7 \\]", "7"),
        ("She has 250 * 5 = 1250 cups.\nA: 1,250", "1,250"),
        ("A: (0,0)\nB: (3,0)\nC: (0,4)\nThe triangle's area is 6.", "6"),  # "A:" not on the last line: a label
        # 5. no marker: the response alone, or the last math in a finished response's tail
        ("y \\leq 4", "y \\leq 4"),
        ("Therefore the probability is 3/4.", "3/4"),
        ("The hypotenuse is $\\sqrt{3^2+4^2} = 5$. I hope this helps!", "\\sqrt{3^2+4^2} = 5"),
        ("So the total is 2,500.50€.", "2500.50"),
        ("x" * 5000 + " so the total is 12.", "12"),  # only the tail is read
        # a response cut off mid-sentence has no final answer
        ("She makes 9 * 2 = 18 dollars a day, so in a week she makes 18 * 7", None),
        ("Step 1: 12 + 30 = 42.\n\nStep 2: 42 / 6 = 7.\n\n# Answer\n\n", None),
        ("The answer is", None),
        ("Let me know if you have any questions.", None),
    ],
)
def test_markers_in_order_then_the_tail(text: str, answer: str | None) -> None:
    assert final_answer.find(text) == answer


def read_cases() -> list[dict]:
    return [json.loads(line) for line in CASES.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_the_case_file_covers_every_category_with_as_many_unequal_pairs() -> None:
    cases = read_cases()
    kinds = Counter(c["kind"] for c in cases)
    assert len(cases) >= 150 and sum(not c["equal"] for c in cases) >= len(cases) / 2
    assert set(kinds) == {"gsm8k", "minerva", "no_marker", "relation", "matrix", "number_format", "choice"} | {
        "marker",
        "truncated",
    }
    assert min(kinds.values()) >= 10
    assert all(c.get("task", "math") in {"answer", *TASKS} for c in cases)


@pytest.mark.parametrize("case", read_cases(), ids=lambda c: f"{c['kind']}:{c['gold'][:20]}:{c['equal']}")
def test_each_labelled_case_grades_as_labelled(case: dict) -> None:
    if case.get("task") == "answer":
        graded = grading.equivalent(case["pred"], case["gold"])
    else:
        problem = Problem(id="case", question="case", answer=case["gold"])
        graded = TASKS[case.get("task", "math")].is_correct(case["pred"], problem)
    assert graded is case["equal"]
