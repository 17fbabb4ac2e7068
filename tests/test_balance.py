"""Balance score, selection and the grid search: hand-computed cases and a plain-Python reference."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from bstar_pl.balance import balance_scores, candidates, caps, grid, n_star, search, select


def build(rows: dict[str, list[tuple[str, float, bool]]], seed: int = 0):
    """Candidates from {query: [(text, reward, correct), ...]}; also the flat lists."""
    flat = [(q, t, r, c) for q, items in rows.items() for t, r, c in items]
    qs, texts, rewards, correct = (list(x) for x in zip(*flat)) if flat else ([], [], [], [])
    return candidates(qs, texts, rewards, correct, seed, queries=list(rows)), texts


def test_hand_computed_balance_score():
    # n* = 2. q1: 3 distinct correct of 3 -> min(3/2, 1) * 3/3 = 1.
    # q2: 1 correct, 1 wrong above τ=0.5 -> min(1/2, 1) * 1/2 = 0.25.
    # q3: nothing above τ -> not counted. Mean over q1, q2 = 0.625.
    cands, _ = build(
        {
            "q1": [("a", 1.1, True), ("b", 1.0, True), ("c", 1.2, True)],
            "q2": [("d", 1.0, True), ("e", 0.6, False), ("f", 0.1, False)],
            "q3": [("g", 0.2, False)],
        }
    )
    assert balance_scores(cands, [0.5], n_target=100, n_star=2) == pytest.approx([0.625])
    # τ = -1 takes f and g as well: q2 -> 0.5 * 1/3, q3 -> 0 (counted now): (1 + 1/6 + 0) / 3.
    assert balance_scores(cands, [-1.0], n_target=100, n_star=2) == pytest.approx([(1 + 1 / 6) / 3])


def test_over_all_queries_counts_the_empty_ones_as_zero():
    # q1 covered perfectly, q2 and q3 with nothing above τ = 1.05: the paper's mean is 1, over all queries 1/3.
    rows = {"q1": [("a", 1.1, True), ("b", 1.2, True)], "q2": [("c", 1.0, True)], "q3": []}
    cands, _ = build(rows)
    assert balance_scores(cands, [1.05], n_target=100, n_star=2) == pytest.approx([1.0])
    assert balance_scores(cands, [1.05], n_target=100, n_star=2, over="all") == pytest.approx([1 / 3])
    # So the search takes the lower threshold that also covers q2 (0.5 * 1 there): (1 + 0.5 + 0) / 3.
    result = search([cands], [1.0], [0.5, 1.05], n_target=100, n_star=2, over="all")
    assert result.threshold == 0.5 and result.score == pytest.approx(0.5)
    assert search([cands], [1.0], [0.5, 1.05], n_target=100, n_star=2).threshold == 1.05


def test_threshold_is_strict_and_duplicates_count_once():
    cands, _ = build({"q": [("a", 1.0, True), ("a", 1.0, True), ("b", 0.5, False)]})
    assert cands.reward.shape == (1, 2)  # "a" kept once
    # Reward exactly τ is not selected: at τ = 0.5 only "a" -> 1 * 1; at τ = 1.0 nothing -> 0.
    assert balance_scores(cands, [0.5, 1.0, 0.49], n_target=10, n_star=1) == pytest.approx([1.0, 0.0, 0.5])


def test_no_query_selected_scores_zero():
    cands, _ = build({"q1": [("a", 0.0, False)], "q2": []})
    assert balance_scores(cands, [0.0], n_target=5, n_star=1) == pytest.approx([0.0])


def test_cap_grows_until_target():
    available = np.array([[5, 1, 3], [0, 0, 0], [2, 2, 2]])
    # Row 0: c=1 -> 3, c=2 -> 5, c=3 -> 7 >= 6. Row 1: unreachable -> the largest count (5, the width).
    # Row 2: c=2 -> 6.
    assert caps(available, n_target=6).tolist() == [3, 5, 2]
    cands, texts = build(
        {
            "q1": [("a", 1.5, True), ("b", 1.4, True), ("c", 1.3, False), ("d", 1.2, True)],
            "q2": [("e", 1.1, True)],
        }
    )
    chosen = [texts[i] for i in select(cands, 0.0, n_target=3)]
    assert chosen == ["a", "b", "e"]  # cap 2: best two of q1, all of q2
    assert [texts[i] for i in select(cands, 0.0, n_target=4)] == ["a", "b", "c", "e"]
    assert [texts[i] for i in select(cands, 1.25, n_target=100)] == ["a", "b", "c"]


def test_n_star():
    assert n_star(67_500, 11_500) == 6  # the paper's setting
    assert n_star(10, 10) == 1
    with pytest.raises(ValueError):
        n_star(0, 5)


def test_grid_keys_are_exact():
    thresholds = grid(-1.0, 1.0, 0.01)
    assert len(thresholds) == 201 and thresholds[0] == -1.0 and thresholds[-1] == 1.0
    assert 0.0 in thresholds and 0.3 in thresholds and 0.07 in thresholds
    assert grid(0.5, 1.2, 0.05) == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15, 1.2]
    with pytest.raises(ValueError):
        grid(1.0, 0.0, 0.1)


def test_ties_are_seeded_and_order_independent():
    items = [(f"t{i}", 1.0, True) for i in range(20)]
    a, texts_a = build({"q": items}, seed=0)
    b, texts_b = build({"q": items[::-1]}, seed=0)
    c, texts_c = build({"q": items}, seed=1)
    pick = lambda cands, texts: [texts[i] for i in select(cands, 0.0, n_target=5)]  # noqa: E731
    assert pick(a, texts_a) == pick(b, texts_b)
    assert pick(a, texts_a) != pick(c, texts_c)


def reference_score(rows: dict[str, list[tuple[str, float, bool]]], tau: float, n_target: int, nstar: int) -> float:
    """The rule in plain Python: dedup, strict threshold, best first, cap grown one by one."""
    kept = {}
    for q, items in rows.items():
        best = {}
        for text, r, c in items:
            if text not in best or r > best[text][0]:
                best[text] = (r, c)
        kept[q] = sorted((v for v in best.values() if v[0] > tau), key=lambda v: -v[0])
    cap = 1
    while sum(min(len(v), cap) for v in kept.values()) < n_target and cap < max(map(len, kept.values()), default=0):
        cap += 1
    scores = []
    for v in kept.values():
        chosen = v[:cap]
        if chosen:
            good = sum(c for _, c in chosen)
            scores.append(min(good / nstar, 1) * good / len(chosen))
    return sum(scores) / len(scores) if scores else 0.0


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_equals_reference(seed):
    rng = random.Random(seed)
    rows = {}
    for q in range(30):
        k = rng.randint(0, 12)
        # Rewards on a coarse lattice give many ties and many rewards equal to a threshold.
        rows[f"q{q}"] = [
            (f"s{rng.randint(0, 8)}", rng.choice([0.0, 0.1, 0.2, 1.0, 1.1, 1.2]), rng.random() < 0.5) for _ in range(k)
        ]
    # Correctness follows the reward (r = 1[correct] + PRM / 5), as it does for real responses.
    rows = {q: [(t, r, r >= 1.0) for t, r, _ in items] for q, items in rows.items()}
    thresholds = grid(-0.5, 1.3, 0.1)
    cands, _ = build(rows, seed)
    for n_target in (1, 20, 60, 1000):
        got = balance_scores(cands, thresholds, n_target, 3)
        want = [reference_score(rows, tau, n_target, 3) for tau in thresholds]
        assert got == pytest.approx(want), n_target


def test_search_picks_first_maximum_by_indices():
    low, _ = build({"q": [("a", 1.0, True), ("b", 0.0, False)]})
    high, _ = build({"q": [("a", 1.0, True), ("c", 1.0, True), ("b", 0.0, False)]})
    result = search([low, high], [0.5, 1.0], [-1.0, 0.0, 0.5], n_target=3, n_star=2)
    # Temperature 1.0 has two distinct correct answers: score 1 at τ = 0.0 and τ = 0.5; the first wins.
    assert result.best == (1, 1) and result.temperature == 1.0 and result.threshold == 0.0
    assert result.score == pytest.approx(1.0)
    assert result.scores.shape == (2, 3)
    assert math.isclose(result.scores[0, 0], 0.5 * 0.5)
    with pytest.raises(ValueError):
        search([low], [0.5], [], 2, 2)
