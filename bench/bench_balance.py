"""Time the (temperature, threshold) search at the paper's size: 15 x 201 grid, 600 queries x 64 samples.

Run: OMP_NUM_THREADS=1 .venv/bin/python bench/bench_balance.py [--repeats 5]
Prints the median time of building the candidate rows (dedup, sort) and of scoring the grid.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from bstar_pl.balance import candidates, grid, n_star, search, select


def synthetic(queries: int, samples: int, temperature: float, rng: random.Random) -> tuple[list, list, list, list]:
    """Responses whose accuracy and diversity fall and rise with temperature, rewards = correct + PRM/5."""
    qs, texts, rewards, correct = [], [], [], []
    for q in range(queries):
        skill = rng.random()
        for _ in range(samples):
            ok = rng.random() < skill * (1.2 - temperature / 2)
            variety = max(1, int(8 * temperature))
            qs.append(f"q{q}")
            texts.append(f"{'right' if ok else 'wrong'} {rng.randrange(variety)}")
            correct.append(ok)
            rewards.append(ok + rng.random() / 5)
    return qs, texts, rewards, correct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=600)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(0)
    temperatures = grid(0.5, 1.2, 0.05)
    thresholds = grid(-1.0, 1.0, 0.01)
    data = [synthetic(args.queries, args.samples, t, rng) for t in temperatures]
    nstar = n_star(67_500, 11_500)
    target = nstar * args.queries
    build_times, search_times, select_times = [], [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        cands = [candidates(*d, seed=0) for d in data]
        build_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        result = search(cands, temperatures, thresholds, target, nstar)
        search_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        select(cands[result.best[0]], result.threshold, target)
        select_times.append(time.perf_counter() - start)
    cells = len(temperatures) * len(thresholds)
    print(f"grid {len(temperatures)} x {len(thresholds)} = {cells} cells, {args.queries} queries x {args.samples}")
    print(f"build candidates: median {statistics.median(build_times):.3f} s")
    print(f"score grid:       median {statistics.median(search_times):.3f} s")
    print(f"select:           median {statistics.median(select_times):.4f} s")
    print(f"best: t={result.temperature} tau={result.threshold} score={result.score:.3f}")


if __name__ == "__main__":
    main()
