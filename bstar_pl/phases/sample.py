"""Sample: k responses per pool query from the last policy at the iteration's temperature; and the engine call that
every sampling phase makes (search, sample, evaluate): the engine holds the policy asked for, the requests are
seeded by the phase, and its time and throughput go to timings.json."""

from __future__ import annotations

import time
from pathlib import Path

from bstar_pl.dist import say
from bstar_pl.engine import Engine
from bstar_pl.records import Problem, Sample
from bstar_pl.rundir import Clock


def sample(
    engine: Engine, policy: Path, pool: list[Problem], temperature: float, n: int, seed: int, clock: Clock, i: int
) -> list[Sample]:
    """The phase: `n` responses per pool query at `temperature` from `policy` (iteration `i`, for the log)."""
    say(f"[iter {i}] sample: {len(pool)} queries x {n} at t={temperature}")
    return generate(engine, policy, pool, [temperature], n, seed, clock, "sampling")


def generate(
    engine: Engine,
    policy: Path,
    problems: list[Problem],
    temperatures: list[float],
    n: int,
    seed: int,
    clock: Clock,
    purpose: str,
) -> list[Sample]:
    """`n` samples per problem at each temperature from `policy` (its weights read from disk unless the engine holds
    them already), the requests seeded by `seed`; timed as `purpose`, with its tokens per second."""
    engine.serve(policy)
    started = time.perf_counter()
    with clock.timed(purpose):
        samples = engine.generate(problems, temperatures, n, seed=seed)
    clock.rate(f"{purpose}_tokens_per_s", sum(x.n_tokens for x in samples), time.perf_counter() - started)
    return samples
