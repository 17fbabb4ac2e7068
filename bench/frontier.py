"""Where is a policy's frontier on the arithmetic task, and does a right answer there mean a right process?

.venv/bin/python bench/frontier.py --policy runs/demo/sft/policy --test runs/demo/data/test.jsonl --per_level 400

Per level of `Problem.info["level"]` (number of terms), on the first `--per_level` test problems of each level:
greedy Pass@1, greedy Pass@1 with every step right (`check_steps`), Pass@K and valid Pass@K over K samples at
`--temperature`, the per-sample accuracy, and the share of answer-correct samples whose steps are all right. A
frontier level has valid Pass@K far above greedy Pass@1 and well above zero; a task whose answers say something
about the process has that share near 1. The README's figures for the demo's P0 were measured with this.
"""

from __future__ import annotations

import argparse
import os
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # before vLLM is imported: see DESIGN.md §3
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bstar_pl.engine import Engine
from bstar_pl.records import Problem, read_jsonl
from bstar_pl.settings import EngineSettings
from bstar_pl.tasks import arithmetic as A


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", type=Path, required=True)
    parser.add_argument("--test", type=Path, required=True)
    parser.add_argument("--per_level", type=int, default=400)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=1.0)
    args = parser.parse_args()

    by_level: dict[int, list[Problem]] = defaultdict(list)
    for problem in read_jsonl(args.test, Problem):
        if len(by_level[problem.info["level"]]) < args.per_level:
            by_level[problem.info["level"]].append(problem)
    problems = [p for level in sorted(by_level) for p in by_level[level]]
    sampler = Engine(args.policy, EngineSettings(dtype="float32", max_model_len=512, max_new_tokens=96), seed=0)
    greedy = {s.problem_id: s.text for s in sampler.generate(problems, [0.0], 1)}
    samples: dict[str, list[str]] = defaultdict(list)
    for s in sampler.generate(problems, [args.temperature], args.k):
        samples[s.problem_id].append(s.text)

    k = args.k
    print(f"K = {k} samples at t = {args.temperature}; percentages")
    print("level  problems  greedy  greedy-valid  Pass@K  valid-Pass@K  sample-acc  valid share of correct")
    for level in sorted(by_level):
        rows = by_level[level]
        right = [[A.is_correct(t, p) for t in samples[p.id]] for p in rows]
        valid = [[A.check_steps(t, p) for t in samples[p.id]] for p in rows]  # check_steps includes the answer
        correct = sum(map(sum, right))
        cells = [
            sum(A.is_correct(greedy[p.id], p) for p in rows) / len(rows),
            sum(A.check_steps(greedy[p.id], p) for p in rows) / len(rows),
            sum(any(r) for r in right) / len(rows),
            sum(any(v) for v in valid) / len(rows),
            correct / (k * len(rows)),
            sum(map(sum, valid)) / correct if correct else float("nan"),
        ]
        print(f"{level:5d}  {len(rows):8d}  " + "  ".join(f"{100 * c:6.1f}" for c in cells))


if __name__ == "__main__":
    main()
