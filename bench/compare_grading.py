"""Grading throughput of two checkouts of bstar_pl (before and after a change), interleaved in one run.

One process per checkout and workload (bench_grading's workloads) grades the whole workload in-process,
as a `grade_all` worker does, once per round; the rounds alternate between the two processes (and which
goes first), so that a busy machine slows both alike. CPU seconds (this process's, which is all the
work here) are the main measure, wall seconds beside them; medians over the rounds, and the ratio.
Usage: OMP_NUM_THREADS=1 .venv/bin/python bench/compare_grading.py --before ../old-checkout [--after .
       --rounds 9 --workloads math,gsm8k,math-raw,gsm8k-raw --data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def serve(workload: str, data: Path) -> None:
    """In a child: load the workload, grade it once unmeasured (first-use caches), then once per line
    read from stdin, answering with the seconds it took."""
    import bench_grading  # this directory's; it imports the bstar_pl that PYTHONPATH points at

    loaders = {
        "math": lambda: bench_grading.math_workload(data),
        "gsm8k": lambda: bench_grading.gsm8k_workload(data),
        "math-raw": lambda: bench_grading.math_workload(data, raw=True),
        "gsm8k-raw": lambda: bench_grading.gsm8k_workload(data, raw=True),
    }
    work = loaders[workload]()
    bench_grading.grading.warm_up()
    bench_grading.unguarded(*work)
    print(json.dumps({"ready": True, "answers": len(work[1])}), flush=True)
    for _ in sys.stdin:
        wall, cpu = time.perf_counter(), time.process_time()
        correct = sum(bench_grading.unguarded(*work))
        print(json.dumps({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "correct": correct}))
        sys.stdout.flush()


def start(checkout: Path, workload: str, data: Path) -> tuple[subprocess.Popen[str], int]:
    """A child grading `workload` with `checkout`'s bstar_pl, and how many answers the workload has."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    cmd = [sys.executable, __file__, "--serve", workload, "--data", str(data)]
    child = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line or not json.loads(line).get("ready"):
        raise RuntimeError(f"grading with the checkout {checkout} did not start ({workload})")
    return child, json.loads(line)["answers"]


def one_round(child: subprocess.Popen[str]) -> dict[str, float]:
    """Let `child` grade its workload once; its CPU and wall seconds and how many answers were right."""
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write("go\n")
    child.stdin.flush()
    return json.loads(child.stdout.readline())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, help="the checkout (repository root) to compare against")
    parser.add_argument("--after", type=Path, default=ROOT)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--workloads", default="math,gsm8k,math-raw,gsm8k-raw")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve, args.data)
    if args.before is None or not (args.before / "bstar_pl").is_dir():
        parser.error("--before must name a checkout holding bstar_pl/")
    print(f"before: {args.before.resolve()}\nafter:  {args.after.resolve()}")
    print(f"{'workload':9} {'answers':>7} {'correct before/after':>20} {'answers/CPU s before':>21} "
          f"{'after':>7} {'ratio':>6} {'wall ratio':>10}")  # fmt: skip
    for workload in args.workloads.split(","):
        checkouts = {"before": args.before, "after": args.after}
        started = {side: start(path, workload, args.data) for side, path in checkouts.items()}
        children, n = {side: child for side, (child, _) in started.items()}, started["after"][1]
        runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
        try:
            for r in range(args.rounds):
                for side in ("before", "after") if r % 2 == 0 else ("after", "before"):
                    runs[side].append(one_round(children[side]))
        finally:
            for child in children.values():
                child.kill()
                child.wait()
        cpu = {side: statistics.median(x["cpu"] for x in rs) for side, rs in runs.items()}
        wall = {side: statistics.median(x["wall"] for x in rs) for side, rs in runs.items()}
        correct = f"{runs['before'][0]['correct']:.0f}/{runs['after'][0]['correct']:.0f}"
        print(
            f"{workload:9} {n:7d} {correct:>20} {n / cpu['before']:21.0f} {n / cpu['after']:7.0f} "
            f"{cpu['before'] / cpu['after']:6.2f} {wall['before'] / wall['after']:10.2f}"
        )


if __name__ == "__main__":
    main()
