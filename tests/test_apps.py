"""The APPS task: loading the real sample, program extraction, APPS-style output comparison, grading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bstar_pl.isolation.sandbox import Limits
from bstar_pl.prompt import split_response
from bstar_pl.records import Problem, RecordError
from bstar_pl.tasks import apps, get
from bstar_pl.tasks.apps import extract_answer, grade, is_correct, load, same_output, same_value

FAST = Limits(test_s=1.0, wall_s=10.0)  # for programs that must fail; the rest run under APPS's 4 s a test


@pytest.fixture(scope="module")
def sample(shared_data: Path) -> list[Problem]:
    return load(shared_data / "apps_sample.jsonl")


def test_the_real_sample_loads_as_it_is(sample: list[Problem], shared_data: Path) -> None:
    assert get("apps") is apps
    assert len(sample) == 15 and len({p.id for p in sample}) == 15
    by_id = {p.id: p for p in sample}
    call = by_id["apps-train-2404"]
    assert call.info["fn_name"] == "findKthPositive" and call.info["inputs"] == [[[2, 3, 4, 7, 11], 5]]
    assert "class Solution:" in call.question and call.question.endswith("Use Call-Based format")
    stdin = by_id["apps-test-203"]
    assert stdin.info["fn_name"] is None and len(stdin.info["inputs"]) == len(stdin.info["outputs"]) == 75
    assert stdin.question.endswith("Use Standard Input format") and stdin.solution == ""
    assert sum(bool(p.solution) for p in sample) == 5
    assert all(p.info["difficulty"] in ("introductory", "interview", "competition") for p in sample)
    assert load(shared_data / "apps_sample.jsonl", limit=3) == sample[:3]


def test_reference_solutions_pass(sample: list[Problem]) -> None:
    """The 5 sample problems with reference solutions (3 standard input, 2 call-based); the solution is a
    B-STaR response whose answer block holds the program."""
    solved = [p for p in sample if p.solution]
    _, answer = split_response(solved[0].solution)
    assert answer is not None and answer.startswith("```python\n")
    results = grade([p.solution for p in solved], solved, workers=2, progress=False)
    assert [r.reason for r in results] == ["pass"] * 5, results
    assert [r.tests_passed for r in results] == [len(p.info["inputs"]) for p in solved]


BROKEN = {
    "wrong": "print(-1)",
    "syntax": "print((",
    "crash": "x = int(input())\nprint(1 / 0)",
    "prints-nothing": "pass",
    "slow": "while True:\n    pass",
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_programs_fail(sample: list[Problem], name: str) -> None:
    problem = next(p for p in sample if p.id == "apps-train-1")
    assert not is_correct(f"```python\n{BROKEN[name]}\n```", problem, FAST)
    assert not is_correct(f"```python\n{BROKEN[name]}\n```", Problem("x", "q", "a", info={"inputs": ["1"]}))


def test_broken_call_based_programs_fail(sample: list[Problem]) -> None:
    problem = next(p for p in sample if p.id == "apps-train-4184")  # is_prime, 8 tests
    right = "def is_prime(n):\n    return n > 1 and all(n % d for d in range(2, int(n ** 0.5) + 1))"
    assert is_correct(f"```python\n{right}\n```", problem)  # default limits
    for wrong in ("def is_prime(n):\n    return n % 2 == 1", "def prime(n):\n    return True", "is_prime = 3"):
        assert not is_correct(f"```python\n{wrong}\n```", problem)
    results = grade(["no code here", f"```python\n{right}\n```"], [problem, problem], progress=False)
    assert [r.reason for r in results] == ["error", "pass"] and "no program" in results[0].detail


def test_extract_answer_takes_the_last_python_block_or_the_answer() -> None:
    assert extract_answer("Plan.\n\n```python\nprint(1)\n```\n\nBetter:\n\n```python\nprint(2)\n```\n") == "print(2)\n"
    assert extract_answer("```\nplain\n```\n\n```py\nprint(3)\n```") == "print(3)\n"
    assert extract_answer("Think.\n\n# Answer\n\nprint(4)") == "print(4)\n"
    assert extract_answer("Think.\n\n# Answer\n\n```\nprint(5)\n```") == "print(5)\n"
    assert extract_answer("Cut off:\n```python\nprint(6)\nfor i in") == "print(6)\nfor i in\n"
    assert extract_answer("no program at all") is None
    assert extract_answer("# Answer\n\n") is None
    assert extract_answer("```python\n\n```") is None


def test_outputs_compare_as_in_apps() -> None:
    assert same_output("Yes\n1 4\n", "Yes\n1 4 ")  # problem 771's expected outputs carry trailing spaces
    assert same_output("1\r\n6\n\n-1", "1\n6\n-1\n")
    assert same_output("1 2\n3", "1\n2 3")  # APPS ignores line structure too
    assert same_output("0.3333333", "0.333333333") and same_output("1.0", "1")
    assert not same_output("0.334", "0.333")
    assert not same_output("1000000000000000001", "1000000000000000000")  # integers exactly
    assert not same_output("yes", "Yes") and not same_output("1 2", "2 1") and not same_output("1", "1 1")
    assert same_value([False], [False]) and same_value(False, [False])  # both APPS layouts of call outputs
    assert same_value(9, 9) and same_value([1.0000001, 2], [1, 2]) and same_value({"a": [1]}, {"a": [1]})
    assert not same_value(True, [False]) and not same_value([1, 2], [2, 1]) and not same_value("1", 1)


def hf_row(problem_id: int) -> dict[str, object]:
    """A row as the Hugging Face copy of APPS stores it: tests and solutions as JSON text."""
    return {
        "problem_id": problem_id,
        "question": "Add two numbers.",
        "solutions": json.dumps(["print(sum(map(int, input().split())))"]),
        "input_output": json.dumps({"inputs": ["1 2\n", "3 4\n"], "outputs": ["3\n", "7\n"]}),
        "difficulty": "introductory",
        "url": "",
        "starter_code": "",
    }


def test_every_source_format_loads_the_same(tmp_path: Path) -> None:
    rows = [hf_row(1), hf_row(2), {**hf_row(3), "input_output": ""}]  # the last has no tests: skipped
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "a.json").write_text(json.dumps(rows))
    datasets = pytest.importorskip("datasets")
    dataset = datasets.Dataset.from_list(rows)
    dataset.to_parquet(tmp_path / "a.parquet")
    loaded = [load(tmp_path / f"a.{ext}") for ext in ("jsonl", "json", "parquet")] + [load(dataset)]
    assert all(problems == loaded[0] for problems in loaded) and len(loaded[0]) == 2
    problem = loaded[0][0]
    assert problem.id == "apps-1" and problem.info["inputs"] == ["1 2\n", "3 4\n"]
    assert is_correct(problem.solution, problem)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "a.jsonl:2: bad JSON"),
        ('{"problem_id": 1}', "a.jsonl:2: field 'question'"),
        ('{"problem_id": 1, "question": "q", "input_output": "{bad"}', "a.jsonl:2: field 'input_output' is not"),
        ('{"problem_id": 1, "question": "q", "input_output": {"inputs": ["1"], "outputs": []}}', "same length"),
        ('{"question": "q"}', "a.jsonl:2: missing field 'problem_id'"),
    ],
)
def test_bad_rows_fail_with_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps(hf_row(1)) + "\n" + line + "\n")
    with pytest.raises(RecordError, match=message.replace("(", r"\(")):
        load(path)
