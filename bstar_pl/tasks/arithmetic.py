"""Synthetic arithmetic ("What is 7 + 4 - 9?"): the task of the CPU demo and the tests.

Terms may be combined in any order that respects precedence, so one problem has several valid
solutions and "unique correct responses" means something; `check_steps` verifies every step.
A problem's level is its number of terms (`Problem.info["level"]`), by which evaluation splits its metrics.
The files the demo and the real-model check use are written by tasks/curriculum.py.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import re
from dataclasses import dataclass, replace

from bstar_pl.prompt import solution, split_response
from bstar_pl.records import Problem, SFTExample, from_dict
from bstar_pl.tasks.loading import Source, load_problems

SPLITS = ("train", "dev", "test")
_STEP = re.compile(r"^(-?\d+) ([-+*]) (\d+) = (-?\d+)$")
_INT = re.compile(r"^-?\d{1,30}$")  # bounded: int() of a 100 kB digit string raises


@dataclass(frozen=True)
class ArithmeticSpec:
    """Difficulty knobs: how many operands, how large (max_operand 9 = one digit), which operators."""

    min_terms: int = 2
    max_terms: int = 3
    max_operand: int = 9
    operators: str = "+-"
    random_order: bool = True  # reference solutions combine terms in a seeded random valid order

    def __post_init__(self) -> None:
        if not 2 <= self.min_terms <= self.max_terms:
            raise ValueError(f"need 2 <= min_terms <= max_terms, got {self.min_terms}, {self.max_terms}")
        if self.max_operand < 1:
            raise ValueError(f"max_operand must be >= 1, got {self.max_operand}")
        if not self.operators or set(self.operators) - set("+-*"):
            raise ValueError(f"operators must be a non-empty subset of '+-*', got {self.operators!r}")


def split_of(expression: str) -> str:
    """The split an expression belongs to, fixed by its hash: 80% train, 10% dev, 10% test.

    Hashing the text (not drawing from the RNG) keeps splits disjoint across seeds and specs.
    """
    bucket = int(hashlib.sha256(expression.encode()).hexdigest(), 16) % 10
    return "test" if bucket == 0 else "dev" if bucket == 1 else "train"


def generate(split: str, n: int, spec: ArithmeticSpec = ArithmeticSpec(), seed: int = 0) -> list[Problem]:
    """`n` distinct problems of `split`, the same for the same (split, n, spec, seed)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rng = random.Random(f"{split}/{seed}")
    problems: dict[str, Problem] = {}
    for _ in range(100 * n + 1000):
        if len(problems) == n:
            break
        k = rng.randint(spec.min_terms, spec.max_terms)
        operands = [rng.randint(1, spec.max_operand) for _ in range(k)]
        ops = [rng.choice(spec.operators) for _ in range(k - 1)]
        expression = _format(operands, ops)
        if expression not in problems and split_of(expression) == split:
            problems[expression] = _problem(operands, ops, spec, seed)
    if len(problems) < n:
        raise ValueError(f"only {len(problems)} distinct {split} problems exist for {spec}, asked for {n}")
    return list(problems.values())


def generate_level(
    split: str, n: int, terms: int, spec: ArithmeticSpec = ArithmeticSpec(), seed: int = 0
) -> list[Problem]:
    """Up to `n` distinct problems of `split` with exactly `terms` terms: all there are when fewer exist (a
    3-term one-digit `+ -` space holds 2,916 problems, about 290 of them in the test split)."""
    spec = replace(spec, min_terms=terms, max_terms=terms)
    if space(spec, terms) > 20 * n:
        return generate(split, n, spec, seed)
    every = [
        (list(operands), list(ops))
        for operands in itertools.product(range(1, spec.max_operand + 1), repeat=terms)
        for ops in itertools.product(spec.operators, repeat=terms - 1)
        if split_of(_format(list(operands), list(ops))) == split
    ]
    random.Random(f"{split}/{seed}/{terms}").shuffle(every)
    return [_problem(operands, ops, spec, seed) for operands, ops in every[:n]]


def space(spec: ArithmeticSpec, terms: int) -> int:
    """How many distinct problems with `terms` terms the spec allows (over all splits)."""
    return spec.max_operand**terms * len(spec.operators) ** (terms - 1)


def _problem(operands: list[int], ops: list[str], spec: ArithmeticSpec, seed: int) -> Problem:
    expression = _format(operands, ops)
    order = random.Random(f"{seed}/{expression}") if spec.random_order else None
    steps, answer = reference_steps(operands, ops, order)
    return Problem(
        id="arith-" + hashlib.sha256(expression.encode()).hexdigest()[:12],
        question=f"What is {expression}?",
        answer=str(answer),
        solution=solution(steps, str(answer)),
        info={"level": len(operands)},
    )


def reference_steps(operands: list[int], ops: list[str], rng: random.Random | None = None) -> tuple[list[str], int]:
    """One valid solution: products first (left to right), then sums, left to right or, given `rng`, two
    random remaining terms at a time, so that SFT data shows the many valid orders there are."""
    terms = _terms(operands, ops)
    steps = []
    for t, (sign, factors) in enumerate(terms):
        while len(factors) > 1:
            a, b = factors[0], factors[1]
            steps.append(f"{a} * {b} = {a * b}")
            factors[:2] = [a * b]
        terms[t] = (sign, factors)
    values = [sign * factors[0] for sign, factors in terms]
    while len(values) > 1:
        i, j = rng.sample(range(len(values)), 2) if rng else (0, 1)
        x, y = values[i], values[j]
        steps.append(f"{x} {'+' if y >= 0 else '-'} {abs(y)} = {x + y}")
        values = [v for k, v in enumerate(values) if k not in (i, j)]
        values.insert(min(i, j), x + y)
    return steps, values[0]


def sft_examples(problems: list[Problem]) -> list[SFTExample]:
    """The reference solutions as SFT data."""
    return [SFTExample(query=p.question, output=p.solution) for p in problems]


def load(source: Source, limit: int | None = None) -> list[Problem]:
    """Problems as `curriculum.write_splits` writes them (Problem records)."""
    return load_problems(source, limit, lambda row: from_dict(Problem, row))


def extract_answer(text: str) -> str | None:
    """The integer after `# Answer` (as written, e.g. "-5"), or None when there is no well-formed answer."""
    _, answer = split_response(text)
    if answer is None:
        return None
    first = answer.split("\n", 1)[0].strip()
    return first if _INT.match(first) else None


def is_correct(text: str, problem: Problem) -> bool:
    """Answer-only grading: the final answer equals the gold answer (steps are not looked at)."""
    answer = extract_answer(text)
    return answer is not None and int(answer) == int(problem.answer)


def check_steps(text: str, problem: Problem) -> bool:
    """Exact process check: every step is true and combines two terms still present, and the
    steps reduce the expression to the gold answer, which is the answer given."""
    steps, _ = split_response(text)
    terms = _terms(*parse(problem.question))
    for step in steps:
        m = _STEP.match(step)
        if m is None:
            return False
        x, op, y, z = int(m[1]), m[2], int(m[3]), int(m[4])
        if not _apply(terms, x, op, y, z):
            return False
    done = len(terms) == 1 and len(terms[0][1]) == 1
    return done and terms[0][0] * terms[0][1][0] == int(problem.answer) and is_correct(text, problem)


def _apply(terms: list[tuple[int, list[int]]], x: int, op: str, y: int, z: int) -> bool:
    """Apply one step to the terms in place; False if the step is false or uses absent terms."""
    if op == "*":
        if x * y != z:
            return False
        for factors in (f for _, f in terms):
            rest = list(factors)
            if x in rest:
                rest.remove(x)
                if y in rest:
                    rest.remove(y)
                    factors[:] = [z, *rest]
                    return True
        return False
    if (x + y if op == "+" else x - y) != z:
        return False
    values = [s * f[0] if len(f) == 1 else None for s, f in terms]
    want = y if op == "+" else -y
    for i, v in enumerate(values):
        if v != x:
            continue
        for j, w in enumerate(values):
            if j != i and w == want:
                for k in sorted((i, j), reverse=True):
                    del terms[k]
                terms.append((1 if z >= 0 else -1, [abs(z)]))
                return True
    return False


def _terms(operands: list[int], ops: list[str]) -> list[tuple[int, list[int]]]:
    """Signed products: 2 + 3 * 4 - 5 -> [(+1, [2]), (+1, [3, 4]), (-1, [5])]."""
    terms = [(1, [operands[0]])]
    for op, value in zip(ops, operands[1:]):
        if op == "*":
            terms[-1][1].append(value)
        else:
            terms.append((1 if op == "+" else -1, [value]))
    return terms


def _format(operands: list[int], ops: list[str]) -> str:
    return " ".join([str(operands[0]), *(f"{op} {v}" for op, v in zip(ops, operands[1:]))])


def parse(question: str) -> tuple[list[int], list[str]]:
    tokens = question.removeprefix("What is ").removesuffix("?").split()
    return [int(t) for t in tokens[::2]], tokens[1::2]
