"""The balance score, selection of training data, and the (temperature, threshold) search.

Numpy only. One rule selects data everywhere: keep responses with reward > τ (strict), one per
distinct text, best reward first, at most `cap` per query, where the cap grows 1, 2, … until at least
`n_target` responses are selected overall (or nothing more can be). The search scores every grid cell
by the balance score of exactly the data this rule would select, so what is measured is what is trained on.

Balance score (B-STaR, Eq. 3): for query i with n_i selected responses of which n'_i are correct (and
unique, since selection keeps one copy of each text), bs_i = min(n'_i / n*, 1) · n'_i / n_i; the score
is the mean over queries with at least one selected response (0 when none has any). n* = ceil(N / M).
With `over="all"` (beyond the paper) it is the mean over every query, a query with nothing selected
scoring 0: the paper's mean cannot see how many queries the selection covers, so a cool temperature
with a strict threshold, whose few selected responses are all correct, scores as high as a cell that
covers every query.

Grid cells are addressed by integer indices into the temperature and threshold lists, never by float keys.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

PAD = -np.inf  # reward of an empty slot: never above any threshold


@dataclass(frozen=True)
class Candidates:
    """One temperature's scored responses, one row per query, distinct texts, best reward first.

    `reward` is -inf and `index` -1 in empty slots; `index` points into the flat lists the rows were
    built from, so a selection maps back to records.
    """

    query_ids: list[str]
    reward: np.ndarray  # (Q, K) float64
    correct: np.ndarray  # (Q, K) bool
    index: np.ndarray  # (Q, K) int64

    @property
    def correct_before(self) -> np.ndarray:
        """(Q, K + 1): correct responses among each row's first k, for k = 0 … K."""
        counts = np.cumsum(self.correct, axis=1)
        return np.concatenate([np.zeros((len(counts), 1), dtype=counts.dtype), counts], axis=1)


def candidates(
    query_ids: Sequence[str],
    texts: Sequence[str],
    rewards: Sequence[float],
    correct: Sequence[bool],
    seed: int,
    queries: Sequence[str] | None = None,
) -> Candidates:
    """Group flat per-response lists by query, drop repeated texts, and sort each group by reward.

    Equal rewards are ordered by a hash of (seed, query, text): deterministic, independent of the input
    order, and different across seeds. `queries` fixes the rows (and keeps queries without responses).
    """
    rows: dict[str, dict[str, int]] = {q: {} for q in queries} if queries is not None else {}
    for i, (q, text) in enumerate(zip(query_ids, texts, strict=True)):
        seen = rows.setdefault(q, {})
        if text not in seen or rewards[i] > rewards[seen[text]]:
            seen[text] = i
    width = max((len(r) for r in rows.values()), default=0)
    reward = np.full((len(rows), width), PAD)
    good = np.zeros((len(rows), width), dtype=bool)
    index = np.full((len(rows), width), -1, dtype=np.int64)
    for row, (q, seen) in enumerate(rows.items()):
        items = list(seen.values())
        ties = [_tie_key(seed, q, texts[i]) for i in items]
        order = sorted(range(len(items)), key=lambda k: (-rewards[items[k]], ties[k]))
        chosen = [items[k] for k in order]
        reward[row, : len(chosen)] = [rewards[i] for i in chosen]
        good[row, : len(chosen)] = [bool(correct[i]) for i in chosen]
        index[row, : len(chosen)] = chosen
    return Candidates(list(rows), reward, good, index)


def _tie_key(seed: int, query: str, text: str) -> bytes:
    return hashlib.blake2b(f"{seed}\0{query}\0{text}".encode(), digest_size=8).digest()


def n_star(n_target: int, n_queries: int) -> int:
    """The number of distinct correct responses per query that counts as enough exploration."""
    if n_target < 1 or n_queries < 1:
        raise ValueError(f"n_target and n_queries must be >= 1, got {n_target} and {n_queries}")
    return math.ceil(n_target / n_queries)


def above(cands: Candidates, thresholds: np.ndarray) -> np.ndarray:
    """(H, Q): responses per query with reward strictly above each threshold (rows are sorted)."""
    return (cands.reward[None, :, :] > np.asarray(thresholds, dtype=np.float64)[:, None, None]).sum(axis=2)


def caps(available: np.ndarray, n_target: int) -> np.ndarray:
    """The smallest per-query cap c with sum_i min(available_i, c) >= n_target, for each row of
    `available` (H, Q); the largest count when the target cannot be reached."""
    available = np.atleast_2d(available)
    width = max(int(available.max(initial=0)), 1)
    c = np.arange(1, width + 1)
    # total[h, c - 1] = sum_i min(available[h, i], c); it never decreases in c.
    total = np.minimum(available[:, :, None], c[None, None, :]).sum(axis=1)
    reached = total >= n_target
    return np.where(reached.any(axis=1), reached.argmax(axis=1) + 1, width)


Over = Literal["selected", "all"]  # the queries the balance score averages over (module doc)


def per_query(
    cands: Candidates, thresholds: Sequence[float], n_target: int, n_star: int
) -> tuple[np.ndarray, np.ndarray]:
    """(H, Q) bs_i of the data selected at each threshold (the rule in the module doc), and (H, Q) whether
    query i has anything selected; the balance score is a mean of the first over the queries the second
    marks (`over="selected"`) or over all of them."""
    available = above(cands, np.asarray(thresholds))  # (H, Q)
    cap = caps(available, n_target)  # (H,)
    n = np.minimum(available, cap[:, None])  # selected per query
    good = np.take_along_axis(cands.correct_before, n.T, axis=1).T  # correct among the selected
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = np.minimum(good / n_star, 1.0) * np.where(n > 0, good / n, 0.0)
    return scores, n > 0


def averaged(scores: np.ndarray, selected: np.ndarray, over: Over) -> tuple[np.ndarray, np.ndarray]:
    """(H,) balance scores from `per_query`'s output, and (H, Q) which queries each mean counts."""
    counted = selected if over == "selected" else np.ones_like(selected)
    c = counted.sum(axis=1)
    return np.where(c > 0, scores.sum(axis=1) / np.maximum(c, 1), 0.0), counted


def contributions(x: np.ndarray, counted: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(H, Q): each query's linearised share of each threshold's score, u_i = (bs_i - score · c_i) / mean(c)
    with c_i = 1 where the mean counts query i (the delta method for a ratio of two sums); its mean is 0 and
    its spread over the queries gives the score's standard error."""
    share = np.maximum(counted.mean(axis=1), 1e-12)
    return (x - scores[:, None] * counted) / share[:, None]


def standard_errors(u: np.ndarray) -> np.ndarray:
    """(H,) from `contributions`' (H, Q): the standard error of each score over the queries (inf for one)."""
    if u.shape[1] < 2:
        return np.full(len(u), np.inf)
    return u.std(axis=1, ddof=1) / math.sqrt(u.shape[1])


def estimate(
    cands: Candidates, thresholds: Sequence[float], n_target: int, n_star: int, over: Over = "selected"
) -> tuple[np.ndarray, np.ndarray]:
    """(H,) balance scores of the data selected at each threshold (the rule in the module doc), and their
    standard errors over the queries."""
    x, selected = per_query(cands, thresholds, n_target, n_star)
    scores, counted = averaged(x, selected, over)
    return scores, standard_errors(contributions(x, counted, scores))


def balance_scores(
    cands: Candidates, thresholds: Sequence[float], n_target: int, n_star: int, over: Over = "selected"
) -> np.ndarray:
    """(H,): the balance score of the data selected at each threshold (the rule in the module doc)."""
    return averaged(*per_query(cands, thresholds, n_target, n_star), over)[0]


def pick(scores: np.ndarray, errors: np.ndarray, confidence: float = 0.0) -> int:
    """The flat index of the first cell with the best score (the paper's rule), or with `confidence` > 0 the
    best lower bound score - confidence · standard error: the maximum of many noisy cells is biased towards
    the noisiest (a strict threshold leaves few queries), and the bound prefers what holds over the queries."""
    objective = scores if confidence == 0 else scores - confidence * errors
    return int(np.argmax(objective))


@dataclass(frozen=True)
class SearchResult:
    """Balance score over the grid, rows = temperatures, columns = thresholds; the best cell."""

    temperatures: list[float]
    thresholds: list[float]
    scores: np.ndarray  # (T, H)
    best: tuple[int, int]
    errors: np.ndarray  # (T, H) standard errors over the queries

    @property
    def temperature(self) -> float:
        return self.temperatures[self.best[0]]

    @property
    def threshold(self) -> float:
        return self.thresholds[self.best[1]]

    @property
    def score(self) -> float:
        return float(self.scores[self.best])


def search(
    per_temperature: Sequence[Candidates],
    temperatures: Sequence[float],
    thresholds: Sequence[float],
    n_target: int,
    n_star: int,
    over: Over = "selected",
    confidence: float = 0.0,
) -> SearchResult:
    """Score every (temperature, threshold) cell; the best is the first maximum in grid order (lowest
    temperature, then lowest threshold), so equal scores resolve the same way every time; with `confidence`,
    the first maximum of the lower bound (`pick`)."""
    if len(per_temperature) != len(temperatures) or not temperatures or not thresholds:
        raise ValueError("search needs one candidate set per temperature and a non-empty grid")
    estimates = [estimate(c, thresholds, n_target, n_star, over) for c in per_temperature]
    scores, errors = np.stack([s for s, _ in estimates]), np.stack([e for _, e in estimates])
    best = np.unravel_index(pick(scores, errors, confidence), scores.shape)
    return SearchResult(list(temperatures), list(thresholds), scores, (int(best[0]), int(best[1])), errors)


def select(cands: Candidates, threshold: float, n_target: int) -> list[int]:
    """Indices (into the flat lists behind `cands`) of the selected responses, query by query, best first."""
    available = above(cands, np.array([threshold]))[0]
    cap = int(caps(available[None], n_target)[0])
    n = np.minimum(available, cap)
    return [int(i) for row, k in zip(cands.index, n) for i in row[:k]]


def grid(start: float, stop: float, step: float) -> list[float]:
    """An inclusive evenly spaced grid, rounded to the step's decimals so that 0.1 + 0.2 is 0.3."""
    if step <= 0 or stop < start:
        raise ValueError(f"a grid needs step > 0 and stop >= start, got start={start}, stop={stop}, step={step}")
    count = math.floor((stop - start) / step + 1e-9) + 1
    decimals = max(0, -math.floor(math.log10(step)) + 2)
    return [round(start + k * step, decimals) for k in range(count)]
