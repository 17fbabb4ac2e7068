"""Files of arithmetic problems, easy to hard: the demo's curriculum (SFT data on the easy levels, a pool and test
levels beyond them) and the real-model check's levels written as GSM8K rows. A level of `write_rows` is its spec's
place in the list (two specs may have as many terms); a level of `write_splits` is the number of terms.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path

from bstar_pl.prompt import split_response
from bstar_pl.records import Problem, write_jsonl
from bstar_pl.tasks.arithmetic import ArithmeticSpec, generate, generate_level, parse, sft_examples, space

# The demo's curriculum: SFT on short problems with any digit and on long ones with small digits; the pool
# and the hard test levels combine the two (long problems with any digit), which no SFT example shows.
SFT_SPECS = (ArithmeticSpec(min_terms=2, max_terms=5, max_operand=5), ArithmeticSpec(min_terms=2, max_terms=3))
SFT_SHARES = (0.7, 0.3)
POOL_SPEC = ArithmeticSpec(min_terms=4, max_terms=5)
TEST_SPEC = ArithmeticSpec(min_terms=3, max_terms=5)


def write_splits(
    out: str | os.PathLike[str],
    sft_specs: Sequence[ArithmeticSpec] = SFT_SPECS,
    sft_shares: Sequence[float] = SFT_SHARES,
    pool_spec: ArithmeticSpec = POOL_SPEC,
    test_spec: ArithmeticSpec = TEST_SPEC,
    n_sft: int = 20_000,
    n_pool: int = 2000,
    n_dev: int = 400,
    n_test: int = 1100,
    seed: int = 0,
) -> dict[str, Path]:
    """Write the task's files: `sft.jsonl` (SFT examples), `pool.jsonl` and `dev.jsonl` (problems of
    `pool_spec`) and `test.jsonl` (up to `n_test` problems per level of `test_spec`).

    Easy -> hard: SFT draws `n_sft` examples from `sft_specs` in proportion to `sft_shares`, the pool holds
    harder problems, which leaves the self-improvement loop headroom. Dev and test are disjoint from
    training by `split_of`; a spec whose train space is smaller than its share repeats no example.
    """
    if len(sft_specs) != len(sft_shares) or not sft_specs or min(sft_shares) <= 0:
        raise ValueError(f"need one positive share per SFT spec, got {list(sft_shares)} for {len(sft_specs)} specs")
    out = Path(out)
    files = {name: out / f"{name}.jsonl" for name in ("sft", "pool", "dev", "test")}
    total = sum(sft_shares)
    sft = [
        p
        for k, (spec, share) in enumerate(zip(sft_specs, sft_shares))
        for p in _share(spec, n_sft * share / total, seed + k)
    ]
    random.Random(f"sft/{seed}").shuffle(sft)
    write_jsonl(files["sft"], sft_examples(sft))
    write_jsonl(files["pool"], generate("train", n_pool, pool_spec, seed + 1))
    write_jsonl(files["dev"], generate("dev", n_dev, pool_spec, seed))
    levels = range(test_spec.min_terms, test_spec.max_terms + 1)
    write_jsonl(files["test"], [p for k in levels for p in generate_level("test", n_test, k, test_spec, seed)])
    return files


# The real-model check's levels: two terms up to 20 (level 1) and two terms up to 50 (level 2), graded by the
# final number. SmolLM2-135M-Instruct, greedy: 27% and 18%; three one-digit terms gave it 0-4%, too few to learn from.
ROW_SPECS = (ArithmeticSpec(2, 2, max_operand=20), ArithmeticSpec(2, 2, max_operand=50))


def write_rows(
    out: str | os.PathLike[str],
    specs: Sequence[ArithmeticSpec] = ROW_SPECS,
    n_pool: int = 400,
    n_test: int = 220,
    seed: int = 0,
) -> dict[str, Path]:
    """Write `pool.jsonl` (train split, up to `n_pool` problems per spec) and `test.jsonl` (test split, up to
    `n_test` per spec) as GSM8K rows, `{question, answer: "<steps> #### n", level}`, for the gsm8k task.

    Why GSM8K's form: an instruct model writes its own format ("7 + 4 = 11"), not the `# Answer` block this
    task's grader requires, and the gsm8k task grades the final number of any response. Each spec holds one
    number of terms (min_terms = max_terms); a problem's level is its spec's place in `specs`, 1 for the first,
    so two specs with as many terms but larger operands are two levels, and a level holds only problems that no
    earlier spec allows (level 2 of the default: some operand over 20).
    """
    out = Path(out)
    files = {name: out / f"{name}.jsonl" for name in ("pool", "test")}
    for name, split, n in (("pool", "train", n_pool), ("test", "test", n_test)):
        rows = []
        for level, spec in enumerate(specs, 1):
            problems = _level(split, n, spec, specs[: level - 1], seed + level - 1)
            rows += [{"question": p.question, "answer": _rationale(p), "level": level} for p in problems]
        random.Random(f"{name}/{seed}").shuffle(rows)
        write_jsonl(files[name], rows)
    return files


def _level(split: str, n: int, spec: ArithmeticSpec, earlier: Sequence[ArithmeticSpec], seed: int) -> list[Problem]:
    """Up to `n` problems of `spec` that none of the `earlier` specs allows: draw more until there are enough
    or the spec's space is spent."""
    wanted = n
    while True:
        drawn = generate_level(split, wanted, spec.max_terms, spec, seed)
        kept = [p for p in drawn if not any(_allows(e, p.question) for e in earlier)]
        if len(kept) >= n or len(drawn) < wanted:
            return kept[:n]
        wanted *= 2


def _allows(spec: ArithmeticSpec, question: str) -> bool:
    """Whether `spec` could have written the question "What is 7 + 14 - 3?"."""
    operands, ops = parse(question)
    return (
        spec.min_terms <= len(operands) <= spec.max_terms
        and max(operands) <= spec.max_operand
        and set(ops) <= set(spec.operators)
    )


def _rationale(problem: Problem) -> str:
    """The reference solution as a GSM8K answer: one step per line, then `#### n`."""
    steps, answer = split_response(problem.solution)
    return "\n".join([*steps, f"#### {answer}"])


def _share(spec: ArithmeticSpec, wanted: float, seed: int) -> list[Problem]:
    """About `wanted` training problems of `spec`, spread evenly over its levels; a level with fewer problems
    than its part gives all it has and leaves the rest to the larger levels."""
    levels = sorted(range(spec.min_terms, spec.max_terms + 1), key=lambda terms: space(spec, terms))
    problems: list[Problem] = []
    for i, terms in enumerate(levels):
        quota = round((wanted - len(problems)) / (len(levels) - i))
        problems += generate_level("train", quota, terms, spec, seed)
    return problems
