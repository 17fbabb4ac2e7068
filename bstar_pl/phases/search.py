"""Search: (t_i, τ_i), the cell of the (temperature, threshold) grid with the best balance score on the search
queries (B-STaR), or the fixed pair (the baselines); and how the search spends its samples: the paper's full grid,
or successive halving.

The threshold costs nothing (it is chosen over responses already scored); every temperature is paid for in
samples, query by query. The paper's code samples 1,000 queries x 64 x 15 temperatures, 130% of its pool's
sampling; the demo's full search, 64 queries x 8 x 4 temperatures, is 51% of its pool's.

    full     every search query at every grid temperature, `samples` responses each; the grid's best cell
             (the paper's search, and the reference the other strategy is measured against).
    halving  successive halving over the temperatures (Karnin et al., ICML 2013) within a budget, a share of
             the pool's responses split evenly over ceil(log2 T) rounds. Each round samples fresh search
             queries at every temperature still in the race, `samples` responses each as the full search
             does, so each query's bs_i is drawn as the full search would draw it. After a round, each
             temperature's estimate is its best cell's balance score over every query it has; the better
             half goes on, fewer when the others lie more than `z` standard errors (paired over the same
             queries) below the leader, and the race stops when one is left. The leader's best cell is
             the choice.

Every cell's standard error comes from its queries: for the paper's mean over the queries with anything
selected (a ratio of two sums) by the delta method, u_i = (bs_i - score · c_i) / mean(c), c_i = 1 when query
i has data. With `confidence` > 0 both strategies pick by the lower bound score - confidence · error instead
of the score (balance.pick). Everything a strategy decided is returned for search.json.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bstar_pl import balance
from bstar_pl.config import Config
from bstar_pl.dist import say
from bstar_pl.engine import Engine
from bstar_pl.modes import MODES
from bstar_pl.phases.sample import generate
from bstar_pl.phases.score import score
from bstar_pl.phases.select import candidate_rows
from bstar_pl.prm.scorer import PRMScorer
from bstar_pl.records import Problem, Scored
from bstar_pl.rundir import Clock
from bstar_pl.seeding import derive_seed
from bstar_pl.tasks import Task

# Sample and score `n` responses per problem at each temperature (the strategy never sees the engine).
Draw = Callable[[list[float], list[Problem], int], list[Scored]]
Name = Literal["full", "halving"]


def search(
    engine: Engine,
    policy: Path,
    queries: list[Problem],
    pool_size: int,
    task: Task,
    prm: PRMScorer | None,
    cfg: Config,
    n_star: int,
    i: int,
    clock: Clock,
) -> dict[str, Any]:
    """The phase (search.json): the fixed (t, τ) of `cfg.selection` where the mode does not search, else the best
    cell the strategy finds on `queries` sampled from `policy`, with everything it decided."""
    if not MODES[cfg.mode].searches:
        return {"temperature": cfg.selection.temperature, "threshold": cfg.selection.threshold}
    c = cfg.search
    spec = Spec(
        c.temperatures.values(), c.thresholds.values(), c.samples, n_star, c.balance_over,
        derive_seed(cfg.seed, i, "select"), cfg.selection.drop_unaligned, c.confidence,
    )  # fmt: skip
    say(f"[iter {i}] search ({c.strategy}): {len(queries)} queries x {len(spec.temperatures)} temperatures")

    def draw(temperatures: list[float], problems: list[Problem], n: int) -> list[Scored]:
        seed = derive_seed(cfg.seed, i, "search_sampling")
        samples = generate(engine, policy, problems, temperatures, n, seed, clock, "search_sampling")
        return score(problems, samples, task, prm, cfg.reward, clock, "search_scoring")

    outcome = run(Strategy(c.strategy, c.budget, c.z), spec, draw, queries, pool_size * cfg.sampling.samples)
    result = outcome.result
    say(
        f"[iter {i}] search: t={result.temperature} τ={result.threshold} balance={result.score:.4f} "
        f"({outcome.responses} responses)"
    )
    return {
        "temperature": result.temperature,
        "threshold": result.threshold,
        "balance_score": result.score,
        "best": list(result.best),
        "strategy": c.strategy,
        "responses": outcome.responses,
        "tokens": outcome.tokens,
        "queries": outcome.queries,
        "rounds": outcome.rounds,
        "temperatures": spec.temperatures,
        "thresholds": spec.thresholds,
        "scores": result.scores.round(6).tolist(),
        "stderr": [[_rounded(float(e)) for e in row] for row in result.errors],
    }


@dataclass(frozen=True)
class Spec:
    """What every strategy searches: the grid, responses per search query, n*, the balance score's mean,
    and how candidate rows are built (the tie-breaking seed; whether responses the PRM could not align count)."""

    temperatures: list[float]
    thresholds: list[float]
    samples: int
    n_star: int
    over: balance.Over = "selected"
    seed: int = 0
    drop_unaligned: bool = True
    confidence: float = 0.0  # pick the best lower bound, score - confidence x standard error (0: the paper's max)


@dataclass(frozen=True)
class Strategy:
    name: Name = "halving"
    budget: float = 0.2  # halving: at most this share of the pool's responses (but a query per round at least)
    z: float = 2.0  # halving: a temperature this many standard errors below the leader is out


@dataclass
class Outcome:
    """The choice, the grid of estimates (each temperature's row over the queries it was sampled on), every
    scored search response, and one entry per round."""

    result: balance.SearchResult
    scored: list[Scored]
    rounds: list[dict[str, Any]]
    queries: list[int]  # per temperature: search queries it was sampled on

    @property
    def responses(self) -> int:
        return len(self.scored)

    @property
    def tokens(self) -> int:
        return sum(s.sample.n_tokens for s in self.scored)


def run(strategy: Strategy, spec: Spec, draw: Draw, problems: list[Problem], pool_responses: int) -> Outcome:
    """Search with `strategy`; `pool_responses` (pool queries x samples) sizes the halving budget."""
    if strategy.name == "full":
        return full(spec, draw, problems)
    return halving(spec, draw, problems, strategy.budget * pool_responses, strategy.z)


def full(spec: Spec, draw: Draw, problems: list[Problem]) -> Outcome:
    """Every temperature on every query, in one draw (one engine call); the grid's first maximum."""
    scored = draw(spec.temperatures, problems, spec.samples)
    by_t = [[s for s in scored if s.sample.temperature == t] for t in spec.temperatures]
    per_t = [candidate_rows(rows, problems, spec.seed, spec.drop_unaligned) for rows in by_t]
    target = spec.n_star * len(problems)  # the pool's N, scaled to the search queries
    result = balance.search(per_t, spec.temperatures, spec.thresholds, target, spec.n_star, spec.over, spec.confidence)
    rounds = [{"queries": len(problems), "temperatures": spec.temperatures, "responses": len(scored)}]
    return Outcome(result, scored, rounds, [len(problems)] * len(spec.temperatures))


def halving(spec: Spec, draw: Draw, problems: list[Problem], budget: float, z: float) -> Outcome:
    """Successive halving over the temperatures (module doc) within `budget` responses."""
    T = len(spec.temperatures)
    n_rounds = max(1, math.ceil(math.log2(T)))
    alive = list(range(T))
    rows: list[list[Scored]] = [[] for _ in range(T)]
    seen = [0] * T  # queries per temperature
    scores = np.zeros((T, len(spec.thresholds)))
    stderr = np.full((T, len(spec.thresholds)), np.inf)
    rounds: list[dict[str, Any]] = []
    used = 0
    leader = 0
    for _ in range(n_rounds):
        size = min(max(1, int(budget / n_rounds // (len(alive) * spec.samples))), len(problems) - used)
        if size < 1:
            break
        fresh = problems[used : used + size]
        used += size
        scored = draw([spec.temperatures[k] for k in alive], fresh, spec.samples)
        for s in scored:
            rows[spec.temperatures.index(s.sample.temperature)].append(s)
        estimates = {}
        for k in alive:
            seen[k] = used
            estimates[k] = Estimate.of(spec, rows[k], problems[:used])
            scores[k], stderr[k] = estimates[k].scores, estimates[k].errors
        leader = max(alive, key=lambda k: (estimates[k].bound, -k))
        lead = estimates[leader]
        gaps = {k: lead.score - estimates[k].score for k in alive}
        errors = {k: lead.paired_error(estimates[k]) for k in alive}
        in_race = [k for k in alive if k == leader or gaps[k] <= z * errors[k]]
        keep = sorted(in_race, key=lambda k: (-estimates[k].bound, k))[: math.ceil(len(alive) / 2)]
        rounds.append(
            {
                "queries": size,
                "temperatures": [spec.temperatures[k] for k in alive],
                "responses": len(scored),
                "estimates": {
                    str(spec.temperatures[k]): {
                        "score": round(estimates[k].score, 6),
                        "stderr": _rounded(estimates[k].error),
                        "threshold": spec.thresholds[estimates[k].best],
                        "gap_stderr": _rounded(errors[k]),
                    }
                    for k in alive
                },
                "kept": [spec.temperatures[k] for k in sorted(keep)],
            }
        )
        alive = sorted(keep)
        if len(alive) == 1:
            break
    best = (leader, estimates[leader].best)
    result = balance.SearchResult(spec.temperatures, spec.thresholds, scores, best, stderr)
    return Outcome(result, [s for r in rows for s in r], rounds, seen)


def _rounded(x: float) -> float | None:
    """For search.json: None where an error is undefined (one query), as JSON has no infinity."""
    return round(x, 6) if math.isfinite(x) else None


@dataclass(frozen=True)
class Estimate:
    """One temperature's balance score and its standard error at every threshold over its queries, its best
    threshold (`balance.pick`), and that cell's per-query linearised contributions u (balance.contributions)."""

    scores: np.ndarray  # (H,)
    errors: np.ndarray  # (H,)
    best: int
    bound: float  # what the pick maximised: the best score, or its lower bound with spec.confidence
    u: np.ndarray  # (Q,)

    @classmethod
    def of(cls, spec: Spec, scored: list[Scored], problems: list[Problem]) -> Estimate:
        cands = candidate_rows(scored, problems, spec.seed, spec.drop_unaligned)
        x, selected = balance.per_query(cands, spec.thresholds, spec.n_star * len(problems), spec.n_star)
        scores, counted = balance.averaged(x, selected, spec.over)
        u = balance.contributions(x, counted, scores)
        errors = balance.standard_errors(u)
        best = balance.pick(scores, errors, spec.confidence)
        bound = scores[best] if spec.confidence == 0 else scores[best] - spec.confidence * errors[best]
        return cls(scores, errors, best, float(bound), u[best])

    @property
    def score(self) -> float:
        return float(self.scores[self.best])

    @property
    def error(self) -> float:
        return float(self.errors[self.best])

    def paired_error(self, other: Estimate) -> float:
        """The standard error of this score minus `other`'s, over the queries both have (the first ones)."""
        n = min(len(self.u), len(other.u))
        d = self.u[:n] - other.u[:n]
        return float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf
