"""How cheaply can the (temperature, threshold) search reach the full search's choice? Record once, replay many times.

    record: sample the search queries at every grid temperature, many responses each (64 by default), with
            the run's policy, and score them with its PRM -> one JSONL of scored samples
    replay: for each recording, draw many full searches and many runs of each cheaper strategy from it
            (responses subsampled per query without replacement, a different seed per replay) and print
            the samples each spends as a share of the pool's sampling and how often it agrees with the full
            search

Reference ("the full search's cell"): a cell's expected full-search balance score is the mean of its score over
`--references` draws of `search.samples` responses per query from the recording; the reference cell is the
argmax of that surface. A pick agrees when its expected score is within `--tolerance` (0.01) of the reference's.

Run (after `make demo`; the README's table: P0 and two iteration-2 policies, the second from a run with
`--search.balance_over=all`):
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_search.py record --policy runs/demo/sft/policy \
        --out runs/bench_search/p0.jsonl
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_search.py record \
        --policy runs/demo/runs/bstar_seed0/iter_02/policy --out runs/bench_search/bstar_it2.jsonl
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_search.py replay runs/bench_search/*.jsonl
        [--queries 128 --full_queries 128 64]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bstar_pl import balance, tasks
from bstar_pl.phases import search as strategies
from bstar_pl.records import Problem, Scored, read_jsonl, write_jsonl


def record(args: argparse.Namespace) -> None:
    from bstar_pl.engine import Engine
    from bstar_pl.phases.score import score_samples
    from bstar_pl.prm.scorer import PRMScorer
    from bstar_pl.settings import EngineSettings

    task = tasks.get("arithmetic")
    queries = task.load(args.pool, limit=args.queries)
    temperatures = balance.grid(*args.temperatures)
    sampler = Engine(args.policy, EngineSettings(dtype="float32", max_model_len=512, max_new_tokens=96), seed=args.seed)
    started = time.perf_counter()
    samples = sampler.generate(queries, temperatures, args.samples)
    print(f"sampled {len(samples)} responses in {time.perf_counter() - started:.0f} s", flush=True)
    prm = PRMScorer(args.prm, max_batch_tokens=8192) if args.prm else None
    scored = score_samples(queries, samples, task, prm)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out, scored)
    print(f"wrote {args.out} ({len(scored)} scored responses)")


class Recording:
    """One recorded search: per temperature and query, the scored responses in sampling order."""

    def __init__(self, path: Path) -> None:
        rows = read_jsonl(path, Scored)
        self.path = path
        self.temperatures = sorted({r.sample.temperature for r in rows})
        self.queries = list(dict.fromkeys(r.sample.problem_id for r in rows))
        self.cells: dict[tuple[float, str], list[Scored]] = {}
        for r in rows:
            self.cells.setdefault((r.sample.temperature, r.sample.problem_id), []).append(r)
        self.samples = min(len(v) for v in self.cells.values())

    def draw(self, rng: np.random.Generator) -> strategies.Draw:
        """A `strategies.Draw` that hands out, per (temperature, query), a random order of its recorded
        responses without replacement; asking a cell again continues where it stopped."""
        order = {key: rng.permutation(len(v)) for key, v in self.cells.items()}
        used = {key: 0 for key in self.cells}

        def draw(temperatures: list[float], problems: list[Problem], n: int) -> list[Scored]:
            out = []
            for t in temperatures:
                for p in problems:
                    key = (t, p.id)
                    start = used[key]
                    if start + n > len(order[key]):
                        raise ValueError(f"{self.path}: {key} has {len(order[key])} responses, asked for {start + n}")
                    out += [self.cells[key][k] for k in order[key][start : start + n]]
                    used[key] = start + n
            return out

        return draw


def replay(args: argparse.Namespace) -> None:
    print(json.dumps(vars(args), default=str))
    for path in args.recordings:
        rec = Recording(path)
        problems = [Problem(q, "?", "?") for q in rec.queries[: args.queries]]
        thresholds = balance.grid(-1.0, 1.0, 0.01)
        n_star = balance.n_star(args.n_target, args.pool_queries)
        pool_responses = args.pool_queries * args.pool_samples
        print(f"\n{path}: {len(problems)} queries x {len(rec.temperatures)} temperatures x {rec.samples} recorded")
        for over in ("selected", "all"):
            spec = strategies.Spec(rec.temperatures, thresholds, args.samples, n_star, over)
            draws = np.stack(
                [
                    strategies.full(spec, rec.draw(np.random.default_rng(10_000 + k)), problems).result.scores
                    for k in range(args.references)
                ]
            )
            expected = draws.mean(axis=0)
            best = float(expected.max())
            ref = np.unravel_index(int(expected.argmax()), expected.shape)
            print(
                f"  balance_over={over}: reference t={rec.temperatures[ref[0]]} tau={thresholds[ref[1]]} "
                f"expected score {best:.4f}; best per temperature {np.round(expected.max(axis=1), 4).tolist()}, "
                f"std of one full search's per-temperature best {np.round(draws.max(axis=2).std(axis=0), 4).tolist()}"
            )
            runs = {}
            for c in args.confidences:
                pick = replace(spec, confidence=c)
                runs |= {f"full {n}q, c={c}": (strategies.Strategy("full"), n, pick) for n in args.full_queries}
                runs |= {
                    f"halving {b}, c={c}": (strategies.Strategy("halving", budget=b), None, pick) for b in args.budgets
                }
            # The full search of replay k: the same seed hands every strategy the same responses per
            # (temperature, query), so it sees a superset of what a cheaper strategy of replay k sees.
            grids = [
                strategies.full(spec, rec.draw(np.random.default_rng(k)), problems).result for k in range(args.replays)
            ]
            for name, (strategy, n, picking) in runs.items():
                spent, agree, t_agree, paired, regret, picks = [], 0, 0, 0, [], []
                for k in range(args.replays):
                    draw = rec.draw(np.random.default_rng(k))
                    out = strategies.run(strategy, picking, draw, problems[:n], pool_responses)
                    grid = grids[k]
                    cell = out.result.best
                    spent.append(out.responses / pool_responses)
                    agree += expected[cell] >= best - args.tolerance
                    t_agree += expected[cell[0]].max() >= best - args.tolerance
                    paired += cell == grid.best or grid.scores[cell] >= grid.score - args.tolerance
                    regret.append(best - expected[cell])
                    picks.append(rec.temperatures[cell[0]])
                counts = {t: picks.count(t) for t in rec.temperatures}
                print(
                    f"    {name:<22} responses {statistics.median(spent):6.1%} of the pool's  agrees "
                    f"{agree / args.replays:6.1%} (its t {t_agree / args.replays:6.1%}; with that replay's full "
                    f"search {paired / args.replays:6.1%})  regret {np.mean(regret):.4f}  picks {counts}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("--policy", type=Path, required=True)
    rec.add_argument("--prm", type=Path, default=Path("runs/demo/prm/model"))
    rec.add_argument("--pool", type=Path, default=Path("runs/demo/data/pool.jsonl"))
    rec.add_argument("--queries", type=int, default=128)
    rec.add_argument("--samples", type=int, default=32)
    rec.add_argument("--temperatures", type=float, nargs=3, default=(0.6, 1.2, 0.2), metavar=("START", "STOP", "STEP"))
    rec.add_argument("--seed", type=int, default=0)
    rec.add_argument("--out", type=Path, required=True)
    rep = sub.add_parser("replay")
    rep.add_argument("recordings", type=Path, nargs="+")
    rep.add_argument("--queries", type=int, default=64, help="search queries (the demo's search_size)")
    rep.add_argument("--samples", type=int, default=8, help="responses per search query (search.samples)")
    rep.add_argument("--pool_queries", type=int, default=1000)
    rep.add_argument("--pool_samples", type=int, default=4)
    rep.add_argument("--n_target", type=int, default=2000)
    rep.add_argument("--budgets", type=float, nargs="+", default=(0.2, 0.5))
    rep.add_argument("--full_queries", type=int, nargs="+", default=(64, 16), help="full searches on the first N")
    rep.add_argument("--confidences", type=float, nargs="+", default=(0.0,), help="search.confidence values")
    rep.add_argument("--replays", type=int, default=200)
    rep.add_argument("--references", type=int, default=200)
    rep.add_argument("--tolerance", type=float, default=0.01)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    (record if args.command == "record" else replay)(args)


if __name__ == "__main__":
    main()
