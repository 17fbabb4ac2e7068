"""Sandbox throughput: programs per second with 1 and 2 workers (the machine has 2 cores), median of repeats.

.venv/bin/python bench/bench_sandbox.py --workers 1 2 --repeats 5
Workloads: `reference` = every reference solution of ../shared/data/apps_sample.jsonl against its problem's tests
(101 programs, 1-8 tests each); `trivial` = 100 one-line programs, one test each (the per-program overhead).
Worker counts alternate within each repeat, so noise from other jobs on the machine hits them alike.

Measured here (2 cores shared with other jobs; one of them held a core at 100% during the run, so a second
worker had no free core to use), median of 5: reference 13.9 programs/s with 1 worker, 13.2 with 2; trivial
19.6 and 20.3. CPU per program (parent + child): 66 ms reference, 49 ms trivial, so two idle cores would allow
about 30 and 40 programs/s. An earlier, busier run (load 6-7) gave 5.9 -> 7.2 and 9.1 -> 12.6 (1.2x, 1.4x).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from bstar_pl.records import Problem
from bstar_pl.tasks import apps

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "apps_sample.jsonl"


def workloads(data: Path) -> dict[str, tuple[list[str], list[Problem]]]:
    """(responses, problems) per workload."""
    problems = {p.id: p for p in apps.load(data)}
    texts, owners = [], []
    for line in data.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        for code in row["solutions"]:
            texts.append(f"```python\n{code}\n```")
            owners.append(problems[f"apps-{row['apps_split']}-{row['problem_id']}"])
    trivial = Problem("trivial", "Print 1.", "1", info={"inputs": ["\n"], "outputs": ["1\n"], "fn_name": None})
    return {"reference": (texts, owners), "trivial": (["```python\nprint(1)\n```"] * 100, [trivial] * 100)}


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and its finished children: the cost, whatever the load."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rates: dict[tuple[str, int], list[float]] = {}
    passed: dict[str, int] = {}
    cpu_ms: dict[str, list[float]] = {}
    loads = workloads(args.data)
    for name, (texts, problems) in loads.items():
        for _ in range(args.repeats):
            for workers in args.workers:
                start, cpu = time.perf_counter(), _cpu_s()
                results = apps.grade(texts, problems, workers=workers, progress=False)
                rates.setdefault((name, workers), []).append(len(texts) / (time.perf_counter() - start))
                cpu_ms.setdefault(name, []).append(1000 * (_cpu_s() - cpu) / len(texts))
                passed[name] = sum(r.passed for r in results)
    print(f"cpus: {os.cpu_count()}, repeats: {args.repeats}")
    print("| workload | programs | passed | workers | programs/s (median) | min | max | vs 1 worker | CPU ms/program |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (name, workers), values in rates.items():
        base = statistics.median(rates.get((name, 1), values))
        n = len(loads[name][0])
        print(
            f"| {name} | {n} | {passed[name]} | {workers} | {statistics.median(values):.1f} | {min(values):.1f} "
            f"| {max(values):.1f} | {statistics.median(values) / base:.2f}x | {statistics.median(cpu_ms[name]):.0f} |"
        )


if __name__ == "__main__":
    main()
