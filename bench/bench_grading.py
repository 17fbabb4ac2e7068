"""Math grading throughput (answers/s): in-process without a deadline, one guarded `is_correct` at a
time, and `grade_all` with 1 and 2 workers. Runs alternate; medians are reported.

Workloads (real data from ../shared/data):
  math       MATH500 reference solutions graded against their own answer written differently (`\\dfrac`,
             `5.0`, spacing: equal, but not the same string) and against the next problem's answer (mostly
             wrong): 1,000 responses, nearly all through sympy.
  gsm8k      the 5,276 labelled GSM8K model solutions in B-STaR format (mostly integers: no sympy).
  math-raw   the same 1,000 gradings of the MATH500 solutions as they are (answer in the last `\\boxed{}`).
  gsm8k-raw  the 5,276 GSM8K model solutions as they are (answer on a last line `A: n`).
Usage: OMP_NUM_THREADS=1 .venv/bin/python bench/bench_grading.py [--repeats 3 --data ../shared/data
       --workloads math,gsm8k --modes in-process,guarded]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import TypeVar

from bstar_pl.isolation import deadline as guard
from bstar_pl.isolation.pool import grade_all
from bstar_pl.records import Problem
from bstar_pl.tasks import grading, gsm8k, math

Workload = tuple[ModuleType, list[str], list[Problem]]
OPTIONS = {"in-process": "in-process", "is_correct": "guarded", "grade_all": "grade_all"}  # a mode's first word
T = TypeVar("T")


def math_workload(data: Path, raw: bool = False) -> Workload:
    problems = math.load(data / "math500_test.jsonl")
    rows = [json.loads(line) for line in (data / "math500_test.jsonl").open()]
    texts, graded = [], []
    for p, q, row in zip(problems, problems[1:] + problems[:1], rows):
        if raw:  # the solution as written, graded against its answer rewritten and the next problem's
            texts += [row["solution"], row["solution"]]
            graded += [replace(p, answer=_rewrite(p.answer)), replace(p, answer=q.answer)]
            continue
        steps = p.solution.rsplit("# Answer", 1)[0]
        same = _rewrite(p.answer)
        texts += [steps + "# Answer\n\n" + same, steps + "# Answer\n\n" + q.answer]
        graded += [p, p]
    return math, texts, graded


def _rewrite(answer: str) -> str:
    """The same answer as a model might write it differently (so no identical-string shortcut)."""
    if "\\frac" in answer:
        return answer.replace("\\frac", "\\dfrac")
    if answer.lstrip("-").isdigit():
        return answer + ".0"
    if " " in answer:
        return answer.replace(" ", "")
    if re.search(r"\d,(\\!)?\d{3}", answer):  # thousands separators
        return answer.replace("\\!", "").replace(",", "")
    if "," in answer:
        return answer.replace(",", ", ")
    return "{" + answer + "}"


def gsm8k_workload(data: Path, raw: bool = False) -> Workload:
    problems = gsm8k.load(data / "gsm8k_test.jsonl")
    texts, graded = [], []
    for p, line in zip(problems, (data / "gsm8k_example_model_solutions.jsonl").open()):
        row = json.loads(line)
        for model in ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification"):
            lines = [x for x in row[model]["solution"].strip().split("\n") if x.strip()]
            if raw:
                texts.append(row[model]["solution"])
            elif lines and lines[-1].startswith("A:"):
                lines[-1:] = ["# Answer", lines[-1][2:].strip()]
            if not raw:
                texts.append("\n\n".join(lines))
            graded.append(p)
    return gsm8k, texts, graded


def unguarded(task: ModuleType, texts: list[str], problems: list[Problem]) -> list[bool]:
    """The same grading in this process with no hard deadline (as a worker runs it): the floor the
    guarded modes are measured against."""
    guard._inside = True  # what a worker process sets: grade here, do not send to a worker
    try:
        return [task.is_correct(t, p) for t, p in zip(texts, problems)]
    finally:
        guard._inside = False


def one_by_one(task: ModuleType, texts: list[str], problems: list[Problem]) -> list[bool]:
    """`is_correct` per response: each symbolic comparison goes to this process's guarded worker."""
    return [task.is_correct(t, p) for t, p in zip(texts, problems)]


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def free_cores() -> float:
    """How many cores this machine gives us now: 2 pure-Python loops at once against one alone
    (2.0 on an idle 2-core machine; less where other jobs share it)."""
    loop = [sys.executable, "-c", "x = 0\nfor i in range(10_000_000): x += i"]
    alone, _ = timed(lambda: subprocess.run(loop, check=True))
    start = time.perf_counter()
    pair = [subprocess.Popen(loop) for _ in range(2)]
    for process in pair:
        process.wait()
    return 2 * alone / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--workloads", default="math,gsm8k,math-raw,gsm8k-raw", help="comma-separated")
    parser.add_argument("--modes", default="in-process,guarded,grade_all", help="comma-separated")
    args = parser.parse_args()
    workloads = {
        "math": lambda: math_workload(args.data),
        "gsm8k": lambda: gsm8k_workload(args.data),
        "math-raw": lambda: math_workload(args.data, raw=True),
        "gsm8k-raw": lambda: gsm8k_workload(args.data, raw=True),
    }
    chosen, options = args.workloads.split(","), args.modes.split(",")
    if unknown := sorted(set(chosen) - set(workloads)) + sorted(set(options) - set(OPTIONS.values())):
        parser.error(f"unknown workload or mode {unknown[0]!r}")

    grading.warm_up()  # this process's sympy caches, as the guarded processes warm theirs
    one_by_one(math, ["# Answer\n\n0.5"], [Problem(id="w", question="w", answer="\\frac12")])  # its guard started
    print(f"free cores before: {free_cores():.2f}")
    two = math.load(args.data / "math500_test.jsonl", 2)
    start_up = {w: [] for w in (1, 2)}  # grade_all of 2 answers: start, import and warm-up of its processes
    print(f"{'workload':9} {'mode':24} {'answers':>7} {'correct':>7} {'answers/s':>9} {'w/o start':>9}  runs (s)")
    for name in chosen:
        work = workloads[name]()
        texts = work[1]
        modes: dict[str, Callable[[], list[bool]]] = {
            "in-process, no guard": lambda w=work: unguarded(*w),
            "is_correct, guarded": lambda w=work: one_by_one(*w),
            "grade_all, 1 worker": lambda w=work: grade_all(*w, workers=1, progress=False),
            "grade_all, 2 workers": lambda w=work: grade_all(*w, workers=2, progress=False),
        }
        modes = {mode: fn for mode, fn in modes.items() if OPTIONS[mode.split(",")[0]] in options}
        runs: dict[str, list[float]] = {mode: [] for mode in modes}
        correct: dict[str, int] = {}
        for _ in range(args.repeats):  # alternate the modes so that machine noise hits them alike
            for mode, fn in modes.items():
                seconds, result = timed(fn)
                runs[mode].append(seconds)
                correct[mode] = sum(result)
            for w in start_up if "grade_all" in options else ():
                start_up[w].append(timed(lambda w=w: grade_all(math, ["x", "y"], two, w, progress=False))[0])
        for mode, seconds in runs.items():
            median = statistics.median(seconds)
            # grade_all starts its processes on every call; a long grading job pays that once.
            start = statistics.median(start_up[int(mode[11])]) if mode.startswith("grade_all") else median
            print(
                f"{name:9} {mode:24} {len(texts):7d} {correct[mode]:7d} {len(texts) / median:9.0f} "
                f"{f'{len(texts) / (median - start):.0f}' if median > start else '':>9}  "
                f"{' '.join(f'{s:.2f}' for s in seconds)}"
            )
    print(f"free cores after: {free_cores():.2f}")
    for w, seconds in start_up.items() if "grade_all" in options else ():
        print(f"grade_all start-up, {w} worker(s) (start, import, warm up): median {statistics.median(seconds):.2f} s")


if __name__ == "__main__":
    main()
