"""Select: the responses with reward > τ, one per distinct text, best first, until about N (balance.select); what
an iteration trains on in each mode (its selection, the SFT data or the pool's reference solutions, with SFT data
replayed where asked); and the figures of the selected data for metrics.json."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from bstar_pl import balance
from bstar_pl.config import Config
from bstar_pl.dist import say
from bstar_pl.metrics.data import sample_metrics, selection_metrics
from bstar_pl.modes import MODES
from bstar_pl.records import Problem, Sample, Scored, Selected, SFTExample, load_examples
from bstar_pl.rundir import Clock
from bstar_pl.seeding import derive_seed
from bstar_pl.settings import ConfigError
from bstar_pl.tasks import Task


def select(pool: list[Problem], scored: list[Scored], tau: float, cfg: Config, i: int, clock: Clock) -> list[Selected]:
    """The phase (selected.jsonl): the selection rule over this iteration's pool samples, and with
    `selection.inject_gold` (the reference code's habit, off by default) each problem's reference solution too."""
    with clock.timed("selection"):
        candidates = list(scored)
        if cfg.selection.inject_gold:
            gold = [Sample(p.id, 0.0, 0, p.solution, 0, "stop") for p in pool if p.solution]
            candidates += [Scored(sample, True, 1.0) for sample in gold]
        selected = chosen(pool, candidates, tau, cfg, i)
    say(f"[iter {i}] select: {len(selected)} responses with reward > {tau}")
    if not selected:
        raise RuntimeError(f"iteration {i}: no response has reward > {tau}; nothing to train on")
    return selected


def chosen(pool: list[Problem], scored: list[Scored], tau: float, cfg: Config, i: int) -> list[Selected]:
    """balance.select over `scored`: reward > τ, distinct texts, best first, until N."""
    cands = candidate_rows(scored, pool, derive_seed(cfg.seed, i, "select"), cfg.selection.drop_unaligned)
    by_id = {p.id: p for p in pool}
    return [
        Selected(s.sample.problem_id, by_id[s.sample.problem_id].question, s.sample.text, s.reward)
        for s in (scored[k] for k in balance.select(cands, tau, cfg.selection.n_target))
    ]


def describe(
    pool: list[Problem], scored: list[Scored], selected: list[Selected], task: Task, cfg: Config, n_star: int, i: int
) -> dict[str, Any]:
    """Figures of the pool sample and of the selected data, for metrics.json and TensorBoard.

    With a PRM, also `answer_only`: what the same rule would select from the same samples with the answer reward
    alone, so that the PRM's effect on the data (e.g. its share of right answers reached through wrong steps) is
    measured on one sample rather than across runs."""
    pool_metrics = sample_metrics(pool, [s.sample for s in scored], task.is_correct, task.check_steps)
    by_id = {p.id: p for p in pool}

    def stats(rows: list[Selected]) -> dict[str, float]:
        return selection_metrics(rows, by_id, task.is_correct, task.check_steps, n_star)

    figures = {"pool": next(iter(pool_metrics.values())) if pool_metrics else {}, "selected": stats(selected)}
    if cfg.reward.prm is not None:
        answer = [dataclasses.replace(s, reward=float(s.correct)) for s in scored]
        figures["answer_only"] = stats(chosen(pool, answer, 0.0, cfg, i))
    return figures


def training_data(
    cfg: Config, pool: list[Problem], selected: list[Selected], i: int
) -> tuple[list[SFTExample], dict[str, Any]]:
    """What iteration i trains on in this mode (its selection, the SFT data, or the pool's reference solutions),
    with `train.replay`'s share of SFT examples mixed in; and how many of each."""
    mode = MODES[cfg.mode]
    if mode.data == "sft":
        examples = load_examples(cfg.data.sft)
    elif mode.data == "gold":
        examples = gold_examples(pool)
    else:
        examples = [SFTExample(s.query, s.output) for s in selected]
    counts: dict[str, Any] = {} if mode.samples else {"selected": {"size": len(examples)}}
    if cfg.train.replay > 0 and mode.replays:
        old = replayed(load_examples(cfg.data.sft), len(examples), cfg.train.replay, cfg.seed, i)
        examples += old
        counts["replayed"] = len(old)
    return examples, counts


def gold_examples(pool: list[Problem]) -> list[SFTExample]:
    """The oracle's data: every pool problem's reference solution (what perfect self-generated data would be)."""
    missing = next((p.id for p in pool if not p.solution), None)
    if missing is not None:
        raise ConfigError(f"mode 'oracle' trains on reference solutions, but pool problem {missing!r} has none")
    return [SFTExample(p.question, p.solution) for p in pool]


def replayed(sft: list[SFTExample], new: int, share: float, seed: int, iteration: int) -> list[SFTExample]:
    """SFT examples to mix with `new` fresh ones so that they are `share` of the whole (seeded per iteration;
    drawn with replacement when the SFT data is smaller than asked)."""
    count = round(new * share / (1 - share))
    rng = np.random.default_rng(derive_seed(seed, iteration, "replay"))
    picks = rng.choice(len(sft), size=count, replace=count > len(sft))
    return [sft[k] for k in picks]


def candidate_rows(scored: list[Scored], queries: list[Problem], seed: int, drop_unaligned: bool) -> balance.Candidates:
    """balance.Candidates over `scored` with one row per query; cut-off responses never count (they lack an
    end, and training on them would teach the policy to stop mid-solution), nor, if so asked, responses the
    PRM could not align. The rows index into `scored` itself."""
    keep = [k for k, s in enumerate(scored) if not s.sample.truncated and (s.aligned or not drop_unaligned)]
    cands = balance.candidates(
        [scored[k].sample.problem_id for k in keep],
        [scored[k].sample.text for k in keep],
        [scored[k].reward for k in keep],
        [scored[k].correct for k in keep],
        seed=seed,
        queries=[q.id for q in queries],
    )
    remap = np.array(keep, dtype=np.int64)
    return dataclasses.replace(cands, index=np.where(cands.index >= 0, remap[np.maximum(cands.index, 0)], -1))
