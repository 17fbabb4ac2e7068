"""The B-STaR loop (DESIGN.md §1) as a hybrid: each rank's process holds a vLLM engine and a Lightning trainer.

    for each iteration i = 1 … I, from the policy P_{i-1}:
        search    (t_i, τ_i) by the balance score on the search queries   -> search.json
        sample    k responses per pool query at t_i                      -> samples.jsonl
        score     r = 1[correct] (+ PRM solution score / 5)               -> scored.jsonl
        select    r > τ_i, distinct texts, best first, until N           -> selected.jsonl
        train     the policy on the selected data, new weights into the engine in place -> policy/
        evaluate  the new policy on the test sets                        -> metrics.json

The baselines differ where modes.py says. Each phase is a function in phases/; each writes one artefact, and an
artefact that exists is read back instead of recomputed (rundir.py), so re-running the same command resumes a
killed run where it stopped (training from its last checkpoint). Every rank runs every phase alike (the engine
shards sampling over ranks); rank 0 writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bstar_pl import balance, dist, rundir, tasks
from bstar_pl.config import Config, check
from bstar_pl.engine import Engine
from bstar_pl.metrics.tensorboard import log_iteration
from bstar_pl.modes import MODES
from bstar_pl.phases.evaluate import TestSets, evaluate
from bstar_pl.phases.sample import sample
from bstar_pl.phases.score import load_prm, score
from bstar_pl.phases.search import search
from bstar_pl.phases.select import describe, select, training_data
from bstar_pl.phases.train import train
from bstar_pl.records import Problem, Sample, Scored, Selected
from bstar_pl.seeding import derive_seed
from bstar_pl.tasks import Task
from bstar_pl.train.policy import PolicyTrainer


def run(cfg: Config) -> list[dict[str, Any]]:
    """B-STaR (or a baseline) for cfg.iterations iterations; return every iteration's metrics, 0 being P0's."""
    check(cfg)
    dist.init()
    mode, task = MODES[cfg.mode], tasks.get(cfg.data.task)
    problems = load_problems(cfg, task)
    n_star = cfg.selection.n_star or balance.n_star(cfg.selection.n_target, len(problems.pool))
    with rundir.opened(cfg) as rd:
        first = next((i for i in range(cfg.iterations + 1) if rd.metrics(i) is None), None)
        if first is None:
            return [rd.metrics(i) for i in range(cfg.iterations + 1)]
        trainer = PolicyTrainer(cfg, rd)  # before the engine: vLLM rewrites the launcher's LOCAL_WORLD_SIZE
        engine = Engine(rd.policy(max(first - 1, 0)), cfg.engine, seed=cfg.seed, prompt=cfg.prompt)
        prm = load_prm(cfg.reward, cfg.prompt)
        history = [rd.metrics(0) or finish(rd, cfg, 0, {}, {}, evaluate(engine, rd, 0, problems.tests, prm, cfg))]
        for i in range(1, cfg.iterations + 1):
            if (done := rd.metrics(i)) is not None:
                history.append(done)
                continue
            folder, previous, stats, choice, selected = rd.iteration(i), rd.policy(i - 1), {}, {}, []
            if mode.samples:
                if (choice := rd.read(folder / "search.json")) is None:
                    queries, pool_size = problems.search, len(problems.pool)
                    found = search(engine, previous, queries, pool_size, task, prm, cfg, n_star, i, rd.clock)
                    choice = rd.keep(folder / "search.json", found)
                t, tau = choice["temperature"], choice["threshold"]
                if (samples := rd.read(folder / "samples.jsonl", Sample)) is None:
                    seed = derive_seed(cfg.seed, i, "sampling")
                    found = sample(engine, previous, problems.pool, t, cfg.sampling.samples, seed, rd.clock, i)
                    samples = rd.keep(folder / "samples.jsonl", found, Sample)
                if (scored := rd.read(folder / "scored.jsonl", Scored)) is None:
                    found = score(problems.pool, samples, task, prm, cfg.reward, rd.clock)
                    scored = rd.keep(folder / "scored.jsonl", found, Scored)
                if (selected := rd.read(folder / "selected.jsonl", Selected)) is None:
                    found = select(problems.pool, scored, tau, cfg, i, rd.clock)
                    selected = rd.keep(folder / "selected.jsonl", found, Selected)
                figures = describe(problems.pool, scored, selected, task, cfg, n_star, i)
                stats = {"temperature": t, "threshold": tau, **figures}
            examples, counts = training_data(cfg, problems.pool, selected, i)
            if not rd.trained(i):
                train(trainer, engine, examples, i, previous, rd.policy(i), rd.clock)
            tests = evaluate(engine, rd, i, problems.tests, prm, cfg)
            history.append(finish(rd, cfg, i, {**stats, **counts}, choice, tests))
    dist.say(summary(history))
    return history


@dataclass(frozen=True)
class Problems:
    """The queries the loop works on: the pool (sampled and trained on), the search queries, the test sets."""

    pool: list[Problem]
    search: list[Problem]
    tests: TestSets


def load_problems(cfg: Config, task: Task) -> Problems:
    pool = task.load(cfg.data.pool, limit=cfg.data.pool_size)
    search_queries = task.load(cfg.data.search or cfg.data.pool, limit=cfg.data.search_size)
    tests = {}
    for name, spec in cfg.data.tests.items():
        grader = tasks.get(spec.task or cfg.data.task)
        tests[name] = (grader, grader.load(spec.path, limit=spec.size), spec)
    return Problems(pool, search_queries, tests)


def finish(
    rd: rundir.RunDir, cfg: Config, i: int, stats: dict[str, Any], choice: dict[str, Any], tests: dict[str, Any]
) -> dict[str, Any]:
    """Iteration i's metrics.json (its figures, the search's, the test sets'; the timings), and its TensorBoard
    points."""
    metrics: dict[str, Any] = {"iteration": i, "mode": cfg.mode, **stats}
    if "balance_score" in choice:
        metrics["search"] = {k: choice[k] for k in ("threshold", "balance_score", "responses", "tokens") if k in choice}
    metrics = rd.finish(i, {**metrics, **tests})
    if dist.rank() == 0:
        log_iteration(rd.root / "tb" / "iterations", i, metrics, choice)
    return metrics


def summary(history: list[dict[str, Any]]) -> str:
    """One line per iteration: chosen t and τ, selected size, and greedy accuracy on each test set."""
    lines = ["iter      t      τ   selected  " + "  ".join(f"{n:>10}" for n in history[0].get("test", {}))]
    for m in history:
        t = m.get("temperature")
        tau = m.get("threshold")
        size = m.get("selected", {}).get("size", "")
        accs = "  ".join(f"{v['accuracy']:>10.3f}" for v in m.get("test", {}).values())
        lines.append(
            f"{m['iteration']:>4}  {'' if t is None else f'{t:.2f}':>5}  {'' if tau is None else f'{tau:.2f}':>5}"
            f"  {size:>9}  {accs}"
        )
    return "\n".join(lines)
