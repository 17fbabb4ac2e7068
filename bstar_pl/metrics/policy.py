"""Metrics of a policy on a test set, from graded responses: greedy Pass@1; over K samples Pass@K, Pass@K-S, majority
vote and, with a PRM, Reward@K-S, Best-of-K and the PRM's ranking AUC within a problem; per MATH level and subject.

Grading is the task's (`is_correct(text, problem)`); `check`, where a task has one, also verifies the steps.
Pure functions: phases/evaluate.py samples the responses and grades them.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from bstar_pl.records import Problem, Scored, temperature_key

Grader = Callable[[str, Problem], bool]
Extractor = Callable[[str], Any]  # a task's extract_answer: the final answer, None when there is none
GROUPED_BY = ("level", "subject")  # Problem.info keys (MATH) by which metrics are also split


def policy_metrics(
    problems: Sequence[Problem],
    greedy: Sequence[Scored],
    sampled: Sequence[Scored],
    extract_answer: Extractor,
    s: int = 4,
    rewards: bool = False,
    check: Grader | None = None,
) -> dict[str, Any]:
    """Test-set metrics of graded responses: `greedy` holds one response per problem (or none at all),
    `sampled` K per problem at one temperature (or none at all).

    Greedy: `accuracy` (Pass@1), `clean_accuracy` (answer and every step right; with `check`), `truncated`.
    Sampled: `pass_at_k` (some sample correct), `pass_at_k_s` (at least `s` distinct correct texts),
    `majority_at_k` (the most frequent extracted answer is right; a tie goes to the answer sampled
    first), `sample_accuracy`, `unique_correct` (distinct correct texts per problem), `sample_truncated`,
    and with `rewards`: `reward_at_k_s` (the top `s` by reward are all correct), `best_of_k` (s = 1) and
    `prm_auc_within` (P(the PRM ranks a correct sample above a wrong one of the same problem), averaged over the
    `prm_auc_problems` problems that have both; 0.5 is chance). Best-of-K beats a random pick (`sample_accuracy`)
    only where the PRM ranks within a problem, which a pooled AUC over all problems does not show. Every other
    metric is a mean over problems; `by_level` and `by_subject` repeat them per value of `Problem.info["level"]` /
    `["subject"]` where problems carry them.

    Rewards rank by the PRM's part of the reward, r - 1[correct], not by r itself: r already holds the
    gold answer's verdict, which would rank every correct response first and make Reward@K-S a count of
    correct samples. Responses the PRM could not align rank last. Tied responses are taken in random
    order, and the metric is its exact expectation over that order, so it never depends on sample order.
    """
    if not problems:
        raise ValueError("no problems to evaluate")
    if s < 1:
        raise ValueError(f"s must be >= 1, got {s}")
    greedy_by = _by_problem(problems, greedy, "greedy")
    sampled_by = _by_problem(problems, sampled, "sampled")
    if greedy and any(len(rows) != 1 for rows in greedy_by.values()):
        pid = next(pid for pid, rows in greedy_by.items() if len(rows) != 1)
        raise ValueError(f"problem {pid!r}: {len(greedy_by[pid])} greedy responses, expected 1")
    metrics: dict[str, Any] = {"problems": len(problems)}
    if sampled:
        metrics.update(temperature=sampled[0].sample.temperature, k=_samples_each(sampled_by, sampled), s=s)
    outcomes = {
        p.id: _outcome(p, greedy_by[p.id], sampled_by[p.id], s, extract_answer, rewards, check) for p in problems
    }
    metrics.update(_mean(outcomes.values()))
    if rewards and sampled:
        within = [v for v in (ranking_auc(sampled_by[p.id]) for p in problems) if v is not None]
        metrics.update(prm_auc_within=sum(within) / len(within) if within else None, prm_auc_problems=len(within))
    for key in GROUPED_BY:
        groups: dict[str, list[dict[str, float]]] = defaultdict(list)
        for p in problems:
            if key in p.info:
                groups[str(p.info[key])].append(outcomes[p.id])
        if groups:
            ordered = sorted(groups, key=_natural)
            metrics[f"by_{key}"] = {name: {"problems": len(groups[name]), **_mean(groups[name])} for name in ordered}
    return metrics


def _samples_each(sampled_by: dict[str, list[Scored]], sampled: Sequence[Scored]) -> int:
    """K, the samples every problem has, all at one temperature; a ValueError names a problem or temperature that
    breaks this."""
    k = len(next(iter(sampled_by.values())))
    pid = next((pid for pid, rows in sampled_by.items() if len(rows) != k), None)
    if pid is not None:
        raise ValueError(f"problem {pid!r}: {len(sampled_by[pid])} sampled responses, expected {k} like the rest")
    temperatures = {temperature_key(x.sample.temperature) for x in sampled}
    if len(temperatures) > 1:
        raise ValueError(f"sampled responses at several temperatures: {sorted(temperatures)}")
    return k


def majority_correct(responses: Sequence[Scored], extract_answer: Extractor) -> bool:
    """Whether the most frequent extracted answer (None does not vote) is right; of tied answers the
    one sampled first (lowest index) wins, a rule blind to correctness."""
    ordered = sorted(responses, key=lambda x: x.sample.index)
    answers = [(extract_answer(x.sample.text), x.correct) for x in ordered]
    votes = Counter(a for a, _ in answers if a is not None)
    if not votes:
        return False
    most = max(votes.values())
    return next(ok for a, ok in answers if a is not None and votes[a] == most)


def top_all_correct(responses: Sequence[Scored], s: int) -> float:
    """P(the `s` responses ranked highest by the PRM are all correct), ties in random order: within the
    tied group that straddles the cut, m of its g responses (c correct) are taken, all correct with
    probability C(c, m) / C(g, m). Fewer than `s` responses: 0."""
    if len(responses) < s:
        return 0.0
    groups: dict[tuple[bool, float], list[bool]] = defaultdict(list)
    for x in responses:
        groups[_rank_key(x)].append(x.correct)
    chance, left = 1.0, s
    for key in sorted(groups, reverse=True):
        correct = groups[key]
        take = min(left, len(correct))
        chance *= math.comb(sum(correct), take) / math.comb(len(correct), take)
        left -= take
        if left == 0 or chance == 0.0:
            break
    return chance


def ranking_auc(responses: Sequence[Scored]) -> float | None:
    """P(a correct response outranks a wrong one) by the PRM (as `top_all_correct` ranks: ties count half, an
    unaligned response ranks last); None unless there are both."""
    right = [_rank_key(x) for x in responses if x.correct]
    wrong = [_rank_key(x) for x in responses if not x.correct]
    if not right or not wrong:
        return None
    wins = sum((r > w) + 0.5 * (r == w) for r in right for w in wrong)
    return wins / (len(right) * len(wrong))


def _rank_key(x: Scored) -> tuple[bool, float]:
    # Rounded so that a float's last bit (1 + 0.2 q - 1 != 0.2 q) never splits a true tie.
    return (x.aligned, round(x.reward - float(x.correct), 9))


def _outcome(
    problem: Problem,
    greedy: list[Scored],
    sampled: list[Scored],
    s: int,
    extract_answer: Extractor,
    rewards: bool,
    check: Grader | None,
) -> dict[str, float]:
    """One problem's metrics (each in [0, 1], but `unique_correct`); means of these are the table."""
    row: dict[str, float] = {}
    if greedy:
        (g,) = greedy
        row["accuracy"] = float(g.correct)
        if check is not None:
            row["clean_accuracy"] = float(g.correct and check(g.sample.text, problem))
        row["truncated"] = float(g.sample.truncated)
    if sampled:
        distinct = len({x.sample.text for x in sampled if x.correct})
        row["pass_at_k"] = float(distinct > 0)
        row["pass_at_k_s"] = float(distinct >= s)
        row["majority_at_k"] = float(majority_correct(sampled, extract_answer))
        if rewards:
            row["reward_at_k_s"] = top_all_correct(sampled, s)
            row["best_of_k"] = top_all_correct(sampled, 1)
        row["sample_accuracy"] = sum(x.correct for x in sampled) / len(sampled)
        row["unique_correct"] = float(distinct)
        row["sample_truncated"] = sum(x.sample.truncated for x in sampled) / len(sampled)
    return row


def _by_problem(problems: Sequence[Problem], scored: Sequence[Scored], what: str) -> dict[str, list[Scored]]:
    by_id: dict[str, list[Scored]] = {p.id: [] for p in problems}
    for x in scored:
        if x.sample.problem_id not in by_id:
            raise ValueError(f"{what} response for unknown problem {x.sample.problem_id!r}")
        by_id[x.sample.problem_id].append(x)
    if scored:
        empty = [pid for pid, rows in by_id.items() if not rows]
        if empty:
            raise ValueError(f"problem {empty[0]!r} has no {what} response ({len(empty)} problems have none)")
    return by_id


def _mean(rows: Iterable[dict[str, float]]) -> dict[str, float]:
    rows = list(rows)
    return {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]} if rows else {}


def _natural(name: str) -> tuple[int, float, str]:
    """Numbers first and in numeric order (levels 1 … 5 … 10), then text."""
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


def metrics_table(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`policy_metrics` as rows for `format_table`: all problems, then each level and subject."""
    rows = {"all": {key: value for key, value in metrics.items() if isinstance(value, (int, float))}}
    rows["all"] = {key: value for key, value in rows["all"].items() if key not in ("temperature", "k", "s")}
    for key in GROUPED_BY:
        for name, row in metrics.get(f"by_{key}", {}).items():
            rows[f"{key} {name}"] = row
    return rows
