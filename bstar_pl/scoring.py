"""Rewards of sampled responses: r = 1[correct] (+ the PRM's solution score, once the PRM lands)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bstar_pl.records import Problem, Sample, Scored


def score_samples(
    problems: Sequence[Problem],
    samples: Sequence[Sample],
    is_correct: Callable[[str, Problem], bool],
    prm: object | None = None,
    how: str = "min",
    weight: float = 0.2,
) -> list[Scored]:
    """Grade every sample with the task; reward = 1[correct]."""
    if prm is not None:
        raise NotImplementedError("PRM scoring")
    by_id = {p.id: p for p in problems}
    return [Scored(s, c, float(c)) for s in samples for c in [is_correct(s.text, by_id[s.problem_id])]]
