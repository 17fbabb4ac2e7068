"""Agreement of the graders with labelled cases, per category, beside plain math-verify.

A case file is JSON lines `{"pred", "gold", "equal", "kind"}` and optionally `"task"`: `answer` grades
`pred` as a final answer (`grading.equivalent`), `math` (the default), `gsm8k` or `arc` grade it as a
whole response with that task's `is_correct`. Then the 5,276 labelled GSM8K model solutions and the
1,319 reference solutions, graded as they are (`A: n`, `#### n`), not converted to B-STaR format.
The math-verify column is `verify(parse(gold), parse(pred))` with its default extraction (for `arc`, its
letter extraction), as a user would call it.
Usage: OMP_NUM_THREADS=1 .venv/bin/python bench/bench_answer_formats.py [--cases tests/data/grading_cases.jsonl
       --data ../shared/data --show]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from math_verify import ExprExtractionConfig, LatexExtractionConfig, StringExtractionConfig, parse, verify

from bstar_pl.records import NONEMPTY, Problem, read_jsonl
from bstar_pl.tasks import arc, grading, gsm8k, math

TASKS = {"math": math, "gsm8k": gsm8k, "arc": arc}
MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    """One labelled pair: does `pred` (an answer or a whole response) grade equal to `gold`?"""

    pred: str
    gold: str = field(metadata=NONEMPTY)
    equal: bool
    kind: str = field(metadata=NONEMPTY)
    task: str = "math"

    def __post_init__(self) -> None:
        if self.task != "answer" and self.task not in TASKS:
            raise ValueError(f"field 'task': expected 'answer' or one of {', '.join(TASKS)}, got {self.task!r}")


def ours(case: Case) -> bool:
    if case.task == "answer":
        return grading.equivalent(case.pred, case.gold)
    return TASKS[case.task].is_correct(case.pred, Problem(id="case", question="case", answer=case.gold))


def plain_math_verify(pred: str, gold: str, letters: bool = False) -> bool:
    """What a user gets from math-verify alone, with its own timeouts."""
    config = [StringExtractionConfig()] if letters else [LatexExtractionConfig(), ExprExtractionConfig()]
    try:
        return bool(verify(parse(gold, config), parse(pred, config)))
    except Exception:
        return False


def case_table(cases: list[Case], baseline: bool, show: bool) -> None:
    by_kind: dict[str, list[tuple[Case, bool, bool | None]]] = defaultdict(list)
    for case in cases:
        mv = plain_math_verify(case.pred, case.gold, case.task == "arc") if baseline else None
        by_kind[case.kind].append((case, ours(case), mv))
    print(f"{'category':14} {'cases':>5} {'unequal':>7} {'agree':>9} {'agree %':>7} {'math-verify %':>13}")
    rows = [*sorted(by_kind.items()), ("all", [r for rs in by_kind.values() for r in rs])]
    for kind, results in rows:
        n = len(results)
        agree = sum(got == c.equal for c, got, _ in results)
        mv = f"{100 * sum(m == c.equal for c, _, m in results) / n:.1f}" if baseline else "-"
        unequal = sum(not c.equal for c, _, _ in results)
        print(f"{kind:14} {n:5d} {unequal:7d} {f'{agree}/{n}':>9} {100 * agree / n:7.1f} {mv:>13}")
    if show:
        for kind, results in sorted(by_kind.items()):
            for case, got, _ in results:
                if got != case.equal:
                    print(f"  {kind}: graded {got}, labelled {case.equal}: {case.pred[-90:]!r} vs {case.gold!r}")


def gsm8k_tables(data: Path, baseline: bool) -> None:
    problems = gsm8k.load(data / "gsm8k_test.jsonl")
    rows = [json.loads(line) for line in (data / "gsm8k_example_model_solutions.jsonl").open()]
    references = [json.loads(line)["answer"] for line in (data / "gsm8k_test.jsonl").open()]
    agree = mv_agree = total = 0
    for problem, row in zip(problems, rows):
        for model in MODELS:
            text, label = row[model]["solution"], row[model]["is_correct"]
            agree += gsm8k.is_correct(text, problem) == label
            mv_agree += baseline and plain_math_verify(text, problem.answer) == label
            total += 1
    mv = f", math-verify {mv_agree}/{total} = {100 * mv_agree / total:.1f}%" if baseline else ""
    print(f"GSM8K labelled model solutions as they are: {agree}/{total} = {100 * agree / total:.2f}% agree{mv}")
    hashes = sum(gsm8k.is_correct(text, p) for text, p in zip(references, problems))
    a_line = sum(gsm8k.is_correct(row["ground_truth"], p) for row, p in zip(rows, problems))
    print(
        f"GSM8K reference solutions as they are, graded against their own answer: '#### n' {hashes}/{len(problems)}, "
        f"'A: n' {a_line}/{len(problems)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=Path, default=ROOT / "tests" / "data" / "grading_cases.jsonl")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false", help="skip plain math-verify")
    parser.add_argument("--show", action="store_true", help="print every case where the grader disagrees")
    args = parser.parse_args()
    start = time.perf_counter()
    case_table(read_jsonl(args.cases, Case), args.baseline, args.show)
    if (args.data / "gsm8k_example_model_solutions.jsonl").exists():
        gsm8k_tables(args.data, args.baseline)
    print(f"took {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
