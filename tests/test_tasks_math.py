"""Math tasks (MATH500, GSM8K): answer extraction, symbolic grading, the real files, batch grading."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from bstar_pl.isolation.pool import grade_all
from bstar_pl.prompt import split_response
from bstar_pl.records import Problem
from bstar_pl.tasks import final_answer, grading, gsm8k, math

MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("Add them.\n\n# Answer\n\n\\frac{1}{2}", "\\frac{1}{2}"),
        ("Add them.\n\n# Answer\n\n$18$.\n\nExtra text after a blank line", "18"),
        ("So $\\boxed{\\frac{a}{\\sqrt{2}}}$, and finally $\\boxed{3}$.", "3"),
        ("The set is $\\boxed{\\left\\{1,2\\right\\}}$.", "\\left\\{1,2\\right\\}"),
        ("First \\boxed{3}, then cut off: \\boxed{\\frac{1", "3"),  # a truncated box is no answer
        ("Thus \\fbox{5}", "5"),
        ("So the answer is $\\frac{1}{2}$. Done.", "\\frac{1}{2}"),
        ("The final answer is 42.", "42"),
        ("the answer is: 3.5.\nThe answer is 7 dollars. Bye", "7 dollars"),  # the last one
        ("\\boxed{1}\n\n# Answer\n\n2", "2"),  # the B-STaR block wins
        ("It costs $\\$18$\n\n# Answer\n\n$18", "18"),  # a currency sign
        ("Steps\n\n# Answer\n\n$\\boxed{-5}$", "-5"),
        ("Steps\n\n# Answer\n\n{(2,4)}", "(2,4)"),
        ("Steps\n\n# Answer\n\n{1}+{2}", "{1}+{2}"),  # not one group around all of it
        ("", None),
        ("no answer here", None),
        ("Steps\n\n# Answer\n\n", None),
    ],
)
def test_extract_final_answer(text: str, answer: str | None) -> None:
    assert final_answer.find(text) == math.extract_answer(text) == answer


@pytest.mark.parametrize(
    ("pred", "gold", "equal"),
    [
        ("\\frac{x}{7}+\\frac{2}{7}", "\\frac{x+2}{7}", True),  # exact-string matching calls this wrong
        ("0.5", "\\frac12", True),
        ("\\dfrac{3}{4}", "\\frac{3}{4}", True),
        ("2+x", "x+2", True),
        ("(2,1)", "(1,2)", False),
        ("[1,2)", "[1,2]", False),
        ("(-\\infty,2]", "(-\\infty, 2]", True),
        ("\\sqrt{8}", "2\\sqrt{2}", True),
        ("90^\\circ", "90", True),
        ("\\text{Evelyn}", "\\text{Evelyn}", True),
        ("\\text{Bob}", "\\text{Evelyn}", False),
        ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", True),
        ("1,450,000", "1450000", True),
        ("-10", "-10", True),
        ("10", "-10", False),
        ("007", "7", True),
        ("3", "4", False),
        (None, "4", False),
        ("1" * 5000, "1" * 5000 + "0", False),  # long integers compare as digits, not with int()
        ("18.00", "18", True),  # decimals of up to 6 places compare exactly, without sympy
        ("2.5", "2.05", False),
        # forms sympy does not read, made plain first
        ("2 500", "2500", True),
        ("2 500", "25000", False),
        ("2,500.50€", "2500.50", True),
        ("45 cm", "45", True),
        ("45 cm", "450", False),
        ("18 dollars and 50 cents", "18", False),
        ("y ≤ 4", "y \\leq 4", True),
        ("−7", "-7", True),
        ("1000,99", "1000.99", True),  # a decimal comma, where the gold is a decimal number
        ("\\mathbf{M} = \\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{bmatrix}1\\\\2\\end{bmatrix}", True),
        # a list is a tuple: its order counts
        ("8, 3, -1", "3, 8, -1", False),
        ("8, 3, -1", "(3, 8, -1)", False),
        ("3, 8, -1", "(3,8,-1)", True),
        # values too big to write are refused before sympy computes them; small towers are not
        ("9^{9^{9^9}}", "1", False),
        ("(10^{9})!", "1", False),
        ("2^{3^2}", "512", True),
    ],
)
def test_equivalence_is_symbolic(pred: str | None, gold: str, equal: bool) -> None:
    assert grading.equivalent(pred, gold) is equal


def test_a_question_for_values_separated_by_commas_takes_them_in_any_order() -> None:
    listed = Problem(id="l", question="Find all integer roots. Enter them, separated by commas.", answer="1,-2")
    ordered = Problem(id="o", question="Find the ordered pair.", answer="1,-2")
    assert math.is_correct("The roots are $-2, 1$.", listed)
    assert not math.is_correct("The pair is $-2, 1$.", ordered)
    assert math.is_correct("The pair is $1, -2$.", ordered)


def test_gsm8k_reference_solutions_grade_correct(shared_data: Path) -> None:
    problems = gsm8k.load(shared_data / "gsm8k_test.jsonl")
    assert len(problems) == 1319 and len({p.id for p in problems}) == 1319
    assert all("<<" not in p.solution and split_response(p.solution)[1] == p.answer for p in problems)
    assert {p.answer for p in problems} >= {"1450000", "-10", "-3"}  # separators removed, signs kept
    assert sum(gsm8k.is_correct(p.solution, p) for p in problems) == 1319
    # The example-solutions file (rationale ending "A: n") loads as the same problems.
    same = gsm8k.load(shared_data / "gsm8k_example_model_solutions.jsonl")
    assert [(p.id, p.answer) for p in same] == [(p.id, p.answer) for p in problems]
    wrong = [Problem(id="w", question="q", answer=str(int(p.answer) + 1)) for p in problems[:50]]
    assert not any(gsm8k.is_correct(p.solution, w) for p, w in zip(problems, wrong))
    # As they are, not converted: the rationale ending "#### n", and the same ending "A: n".
    rows = [json.loads(line) for line in (shared_data / "gsm8k_test.jsonl").open()]
    samples = [json.loads(line) for line in (shared_data / "gsm8k_example_model_solutions.jsonl").open()]
    assert sum(gsm8k.is_correct(row["answer"], p) for row, p in zip(rows, problems)) == 1319
    assert sum(gsm8k.is_correct(row["ground_truth"], p) for row, p in zip(samples, problems)) == 1319
    assert not any(gsm8k.is_correct(row["answer"], w) for row, w in zip(rows, wrong))


@pytest.mark.parametrize("form", ["as they are", "in B-STaR format"])
def test_gsm8k_labelled_model_solutions_agree_with_their_labels(shared_data: Path, form: str) -> None:
    problems = gsm8k.load(shared_data / "gsm8k_test.jsonl")
    rows = [json.loads(line) for line in (shared_data / "gsm8k_example_model_solutions.jsonl").open()]
    agree = total = 0
    for problem, row in zip(problems, rows):
        for model in MODELS:
            text, label = row[model]["solution"], row[model]["is_correct"]
            text = to_bstar(text) if form == "in B-STaR format" else text  # as they are: a last line "A: n"
            agree += gsm8k.is_correct(text, problem) == label
            total += 1
    print(f"GSM8K labelled model solutions {form}: {agree}/{total} = {agree / total:.4f} agree with is_correct")
    assert total == 5276 and agree / total >= 0.99


def to_bstar(solution: str) -> str:
    """A GSM8K model solution (lines, then `A: n`) in B-STaR format: lines as steps, then `# Answer`."""
    lines = [line for line in solution.strip().split("\n") if line.strip()]
    if lines and lines[-1].startswith("A:"):
        lines[-1:] = ["# Answer", lines[-1][2:].strip()]
    return "\n\n".join(lines)


@pytest.mark.parametrize(
    ("text", "correct"),
    [
        ("She sells 9 eggs for $2 each.\n\n# Answer\n\n18", True),
        ("# Answer\n\n$18.00", True),
        ("# Answer\n\n18 dollars", True),
        ("So she makes \\boxed{18} dollars.", True),  # an instruct model
        ("9 * 2 = 18. The answer is 18.", True),  # a base model
        ("The answer is 17.", False),
        ("# Answer\n\n18 dollars and 50 cents", False),
        ("18", True),  # the answer alone
        ("She makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18", True),  # GSM8K's reference format
        ("She makes 9 * 2 = $<<9*2=18>>18 every day.\nA: 18", True),  # its model-solution format
        ("She makes 9 * 2 = 18 dollars every day.", True),  # no marker: the last number
        ("She makes 9 * 2 = 18 dollars every day, so in a week 18 * 7", False),  # cut off mid-sentence
    ],
)
def test_gsm8k_answer_forms(text: str, correct: bool) -> None:
    assert gsm8k.is_correct(text, Problem(id="g", question="q", answer="18")) is correct


def test_math500_reference_solutions_grade_equal_to_their_answers(shared_data: Path) -> None:
    problems = math.load(shared_data / "math500_test.jsonl")
    rows = [json.loads(line) for line in (shared_data / "math500_test.jsonl").open()]
    assert len(problems) == 500 and problems[0].id == "test/precalculus/807.json"
    assert problems[0].info == {"level": 2, "subject": "Precalculus", "unique_id": "test/precalculus/807.json"}
    converted = sum(math.is_correct(p.solution, p) for p in problems)
    raw = sum(math.is_correct(row["solution"], p) for row, p in zip(rows, problems))  # its last \boxed{}
    # Through sympy, not the identical-string shortcut: gold parsed twice compares equal.
    symbolic = sum(grading.symbolic_equal(p.answer, p.answer) for p in problems)
    print(f"MATH500: {converted}/500 converted, {raw}/500 raw, {symbolic}/500 symbolic reference solutions correct")
    assert converted == raw == symbolic == 500
    shifted = sum(math.is_correct(p.solution, q) for p, q in itertools.pairwise(problems[:201]))
    assert shifted < 10  # another problem's answer is (nearly always) wrong


def test_math_rows_in_the_original_format(tmp_path: Path) -> None:
    row = {"problem": "What is $1+1$?", "level": "Level 1", "type": "Prealgebra", "solution": "So $\\boxed{2}$."}
    (problem,) = math.load([row])
    assert (problem.answer, problem.info) == ("2", {"level": 1, "subject": "Prealgebra"})
    assert problem.id.startswith("math-")
    assert problem.solution == "So $\\boxed{2}$.\n\n# Answer\n\n2" and math.is_correct(problem.solution, problem)
    with pytest.raises(ValueError, match="no \\\\boxed"):
        math.load([{"problem": "p", "solution": "no box"}])


def test_grade_all_matches_one_by_one_grading_in_order(shared_data: Path) -> None:
    problems = math.load(shared_data / "math500_test.jsonl", limit=20)
    # Small enough for the size guard, but sympy works on it until the grader's timer stops it (1 s).
    stuck, one = "# Answer\n\n(x+1)^{999}", Problem(id="one", question="q", answer="1")
    texts = [problems[i if i % 2 else (i + 1) % 20].solution for i in range(20)] + [stuck]
    problems = [*problems, one]
    expected = [math.is_correct(t, p) for t, p in zip(texts, problems)]
    assert grade_all(math, texts, problems, workers=2, progress=False) == expected
    assert sum(expected) == 10 and not expected[-1]
    # A per-response deadline shorter than the grader's own timer: the stuck worker is replaced.
    assert grade_all(math, [stuck, texts[1]], [one, problems[1]], workers=1, timeout=0.5, progress=False) == [
        False,
        True,
    ]
    assert grade_all(math, [], [], progress=False) == []
    with pytest.raises(ValueError, match="2 texts but 1 problems"):
        grade_all(math, ["a", "b"], problems[:1])
