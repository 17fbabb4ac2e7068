"""The synthetic arithmetic task: determinism, disjoint splits, solutions, grading and the step checker."""

from __future__ import annotations

from pathlib import Path

import pytest

from bstar_pl.prompt import prompt, split_response
from bstar_pl.records import Problem, SFTExample, read_jsonl
from bstar_pl.tasks import arithmetic, curriculum, gsm8k
from bstar_pl.tasks.arithmetic import ArithmeticSpec, check_steps, extract_answer, generate, is_correct

PROBLEM = Problem(id="p", question="What is 37 + 48 - 19?", answer="66")


def test_reference_solution_has_the_bstar_format() -> None:
    steps, answer = arithmetic.reference_steps([37, 48, 19], ["+", "-"])
    assert (steps, answer) == (["37 + 48 = 85", "85 - 19 = 66"], 66)
    steps, answer = arithmetic.reference_steps([2, 3, 4, 5], ["+", "*", "-"])
    assert (steps, answer) == (["3 * 4 = 12", "2 + 12 = 14", "14 - 5 = 9"], 9)


def test_generation_is_deterministic_and_respects_the_knobs() -> None:
    spec = ArithmeticSpec(min_terms=3, max_terms=5, max_operand=20, operators="+*")
    a, b = generate("train", 300, spec, seed=3), generate("train", 300, spec, seed=3)
    assert a == b and len({p.question for p in a}) == 300
    assert generate("train", 300, spec, seed=4) != a
    for p in a:
        numbers = p.question.removeprefix("What is ").removesuffix("?").split()[::2]
        assert 3 <= len(numbers) <= 5 and all(1 <= int(x) <= 20 for x in numbers)
        assert "-" not in p.question.split("is", 1)[1]
        assert is_correct(p.solution, p) and check_steps(p.solution, p)
        assert int(p.answer) == eval(p.question.removeprefix("What is ").removesuffix("?"))


def test_splits_are_disjoint_across_seeds_and_specs() -> None:
    questions = {
        split: {p.question for seed in (0, 1) for n in (3, 4) for p in generate(split, 150, ArithmeticSpec(n, n), seed)}
        for split in arithmetic.SPLITS
    }
    assert not questions["train"] & questions["dev"]
    assert not questions["train"] & questions["test"]
    assert not questions["dev"] & questions["test"]


def test_too_small_a_space_fails_clearly() -> None:
    with pytest.raises(ValueError, match=r"only .* distinct test problems"):
        generate("test", 50, ArithmeticSpec(min_terms=2, max_terms=2, max_operand=3, operators="+"))
    with pytest.raises(ValueError, match="operators"):
        ArithmeticSpec(operators="/")


@pytest.mark.parametrize(
    ("text", "answer", "steps_ok"),
    [
        ("37 + 48 = 85\n\n85 - 19 = 66\n\n# Answer\n\n66", "66", True),
        ("48 - 19 = 29\n\n37 + 29 = 66\n\n# Answer\n\n66", "66", True),  # another order, also valid
        ("37 - 19 = 18\n\n18 + 48 = 66\n\n# Answer\n\n66", "66", True),
        ("37 + 48 = 85\n\n85 - 19 = 65\n\n# Answer\n\n66", "66", False),  # a false step, right answer
        ("37 + 48 = 85\n\n48 - 19 = 29\n\n# Answer\n\n66", "66", False),  # reuses a consumed term
        ("37 + 19 = 56\n\n56 + 10 = 66\n\n# Answer\n\n66", "66", False),  # wrong sign, made-up term
        ("37 + 48 = 85\n\n85 - 19 = 66\n\n# Answer\n\n65", "65", False),
        ("37 + 48 = 85\n\n85 - 19 = 66", None, False),  # no answer block (e.g. cut by the length limit)
        ("# Answer\n\n66", "66", False),
        ("37 + 48 = 85\n\n# Answer\n\n66 apples", None, False),
    ],
)
def test_grading_and_step_check(text: str, answer: str | None, steps_ok: bool) -> None:
    assert extract_answer(text) == answer
    assert is_correct(text, PROBLEM) == (answer == "66")
    assert check_steps(text, PROBLEM) == steps_ok


def test_step_check_with_products_and_negative_intermediates() -> None:
    p = Problem(id="q", question="What is 2 - 3 * 4 + 5?", answer="-5")
    assert check_steps("3 * 4 = 12\n\n2 - 12 = -10\n\n-10 + 5 = -5\n\n# Answer\n\n-5", p)
    assert check_steps("4 * 3 = 12\n\n2 + 5 = 7\n\n7 - 12 = -5\n\n# Answer\n\n-5", p)
    assert not check_steps("2 - 3 = -1\n\n-1 * 4 = -4\n\n-4 + 5 = 1\n\n# Answer\n\n-5", p)  # ignores precedence


def test_template_splits_steps_and_answer() -> None:
    assert prompt("What is 1 + 2?") == "# Question\n\nWhat is 1 + 2?\n\n# Solution\n\n"
    assert split_response("1 + 2 = 3\n\n# Answer\n\n3") == (["1 + 2 = 3"], "3")
    assert split_response("1 + 2 = 3\n\n# Answer\n\n") == (["1 + 2 = 3"], None)


def test_write_splits(tmp_path: Path) -> None:
    files = curriculum.write_splits(tmp_path, n_sft=500, n_pool=40, n_dev=10, n_test=20)
    sft = read_jsonl(files["sft"], SFTExample)
    pool, dev, test = (read_jsonl(files[k], Problem) for k in ("pool", "dev", "test"))
    assert arithmetic.load(files["pool"]) == pool and arithmetic.load(files["test"], limit=3) == test[:3]
    assert (len(pool), len(dev), len(test)) == (40, 10, 60) and abs(len(sft) - 500) <= 4
    assert not {p.id for p in pool} & {p.id for p in dev + test}
    assert [sum(p.info["level"] == k for p in test) for k in (3, 4, 5)] == [20, 20, 20]  # n_test per level

    def operands(question: str) -> list[int]:
        return [int(x) for x in question.removeprefix("What is ").removesuffix("?").split()[::2]]

    # Easy -> hard: SFT has long problems only with small operands; the pool has only long problems with any.
    assert all(len(operands(e.query)) <= 3 or max(operands(e.query)) <= 5 for e in sft)
    assert any(len(operands(e.query)) == 5 for e in sft) and any(max(operands(e.query)) > 5 for e in sft)
    assert {p.info["level"] for p in pool} == {4, 5} and any(max(operands(p.question)) > 5 for p in pool)
    # The shares hold: 70% from the long small-operand spec, 30% from the short one.
    short = sum(len(operands(e.query)) <= 3 and max(operands(e.query)) > 5 for e in sft)
    assert 0.2 < short / len(sft) < 0.3


def test_generate_level_takes_all_there_are_of_a_small_level() -> None:
    three = arithmetic.generate_level("test", 10_000, 3, ArithmeticSpec())
    assert 250 < len(three) < 340 and len({p.question for p in three}) == len(three)  # ~10% of 2,916
    assert {p.info["level"] for p in three} == {3} and all(
        arithmetic.split_of(p.question[8:-1]) == "test" for p in three
    )
    assert arithmetic.generate_level("test", 10_000, 3, ArithmeticSpec()) == three  # deterministic
    assert len(arithmetic.generate_level("train", 50, 5, ArithmeticSpec())) == 50


def test_shares_must_match_specs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one positive share per SFT spec"):
        curriculum.write_splits(tmp_path, sft_specs=(ArithmeticSpec(),), sft_shares=(0.5, 0.5))


def test_write_rows_gives_gsm8k_rows_with_levels_and_disjoint_splits(tmp_path: Path) -> None:
    specs = (ArithmeticSpec(2, 2, max_operand=20), ArithmeticSpec(3, 3), ArithmeticSpec(2, 2, max_operand=50))
    files = curriculum.write_rows(tmp_path, specs, n_pool=30, n_test=20)
    pool, test = gsm8k.load(files["pool"]), gsm8k.load(files["test"])
    for problems, n in ((pool, 30), (test, 20)):
        levels = [p.info["level"] for p in problems]
        assert len({p.question for p in problems}) == len(problems)
        assert levels.count(1) == levels.count(2) == levels.count(3) == n
        assert set(levels[:10]) == {1, 2, 3}  # shuffled, so a prefix holds every level
    assert not {p.question for p in pool} & {p.question for p in test}
    for p in test:  # the reference rationale grades as right, and its steps check; the level names the spec
        assert gsm8k.is_correct(p.solution, p)
        assert check_steps(p.solution, p)
        operands = [int(x) for x in p.question[8:-1].replace("-", "+").split("+")]
        spec = specs[p.info["level"] - 1]
        assert len(operands) == spec.max_terms and max(operands) <= spec.max_operand
        assert p.info["level"] != 3 or max(operands) > 20  # level 3 holds only what level 1 does not allow
