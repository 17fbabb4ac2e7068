"""Score: each sampled response's reward, r = 1[answer correct] + weight x the PRM's solution score (the paper:
min of the step scores / 5); without a PRM, r = 1[answer correct]. The task grades; many responses can be graded
on all cores, each under a hard deadline (`reward.workers`)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from bstar_pl import dist
from bstar_pl.dist import say
from bstar_pl.isolation.pool import grade_all
from bstar_pl.prm.scorer import PRMScorer, solution_score
from bstar_pl.prompt import PromptFormat
from bstar_pl.records import Problem, Sample, Scored
from bstar_pl.rundir import Clock
from bstar_pl.settings import Reward
from bstar_pl.tasks import Task


def score(
    problems: list[Problem],
    samples: list[Sample],
    task: Task,
    prm: PRMScorer | None,
    reward: Reward,
    clock: Clock,
    purpose: str = "scoring",
) -> list[Scored]:
    """The phase: every sample rewarded, timed as `purpose`."""
    say(f"score: {len(samples)} responses")
    with clock.timed(purpose):
        return score_samples(problems, samples, task, prm, reward.aggregate, reward.weight, workers=reward.workers)


def load_prm(reward: Reward, prompt: PromptFormat) -> PRMScorer | None:
    """The PRM of the reward settings, on the GPU where there is one; None without a PRM."""
    if reward.prm is None:
        return None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return PRMScorer(
        reward.prm, device=device, max_batch_tokens=reward.batch_tokens, score=reward.score, clip=reward.clip,
        prompt=prompt,
    )  # fmt: skip


def score_samples(
    problems: Sequence[Problem],
    samples: Sequence[Sample],
    task: Task,
    prm: PRMScorer | None = None,
    how: str = "min",
    weight: float = 0.2,
    progress: bool = True,
    workers: int = 1,
) -> list[Scored]:
    """Reward every sample: float(correct), plus `weight` x solution_score (the paper: 1/5) with a PRM.

    `workers` grading processes (0: this rank's share of the node's cores; 1: grade here, one response at a time).
    A response the PRM cannot align keeps step_scores empty, aligned=False and reward float(correct): it is
    rewarded as without a PRM rather than with an invented score, and selection may drop it.
    """
    by_id = {p.id: p for p in problems}
    missing = [s.problem_id for s in samples if s.problem_id not in by_id]
    if missing:
        raise ValueError(f"sample of unknown problem {missing[0]!r} ({len(missing)} samples in all)")
    if workers == 1:
        correct = [bool(task.is_correct(s.text, by_id[s.problem_id])) for s in samples]
    else:
        texts, owners = [s.text for s in samples], [by_id[s.problem_id] for s in samples]
        # Every rank grades every response: 0 shares this node's cores among its ranks.
        workers = workers or max(1, len(os.sched_getaffinity(0)) // dist.local_world_size())
        correct = grade_all(task, texts, owners, workers=workers, progress=progress)
    if prm is None:
        return [Scored(s, c, float(c)) for s, c in zip(samples, correct)]
    steps = prm.score([by_id[s.problem_id].question for s in samples], [s.text for s in samples], progress)
    scored = []
    for s, c, st in zip(samples, correct, steps):
        reward = float(c) + (weight * solution_score(st.scores, how) if st.aligned else 0.0)
        scored.append(Scored(s, c, reward, st.scores, st.aligned))
    return scored
