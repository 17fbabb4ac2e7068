"""The search strategies on synthetic draws: the full search is balance.search over one draw; halving keeps to
its budget, races on fresh queries, stops once one temperature is left, and finds a clearly best one."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from bstar_pl import balance
from bstar_pl.phases import search as strategies
from bstar_pl.phases.search import Estimate, Spec, Strategy
from bstar_pl.phases.select import candidate_rows
from bstar_pl.records import Problem, Sample, Scored

TEMPERATURES = [0.6, 0.8, 1.0, 1.2]
THRESHOLDS = balance.grid(-1.0, 1.0, 0.1)
PROBLEMS = [Problem(f"q{k}", f"question {k}", "1") for k in range(64)]


def synthetic(accuracy: dict[float, float], seed: int = 0) -> tuple[strategies.Draw, list[tuple]]:
    """A draw whose responses at temperature t are right with probability accuracy[t], each a distinct text;
    it logs every call (temperatures, problem ids, n)."""
    rng = random.Random(seed)
    calls: list[tuple] = []

    def draw(temperatures: list[float], problems: list[Problem], n: int) -> list[Scored]:
        calls.append((list(temperatures), [p.id for p in problems], n))
        out = []
        for p in problems:
            for t in temperatures:
                for k in range(n):
                    ok = rng.random() < accuracy[t]
                    text = f"{'right' if ok else 'wrong'} {t} {k} {rng.random()}"
                    out.append(Scored(Sample(p.id, t, k, text, 10, "stop"), ok, ok + rng.uniform(-0.2, 0.2)))
        return out

    return draw, calls


def spec(over: balance.Over = "all") -> Spec:
    return Spec(TEMPERATURES, THRESHOLDS, 8, n_star=2, over=over)


def test_full_is_the_grid_search_over_one_draw() -> None:
    draw, calls = synthetic({0.6: 0.3, 0.8: 0.5, 1.0: 0.4, 1.2: 0.2})
    out = strategies.full(spec("selected"), draw, PROBLEMS)
    assert calls == [(TEMPERATURES, [p.id for p in PROBLEMS], 8)]
    per_t = [
        candidate_rows([s for s in out.scored if s.sample.temperature == t], PROBLEMS, 0, True) for t in TEMPERATURES
    ]
    reference = balance.search(per_t, TEMPERATURES, THRESHOLDS, 2 * len(PROBLEMS), 2, "selected")
    np.testing.assert_allclose(out.result.scores, reference.scores)
    assert out.result.best == reference.best
    assert out.responses == 64 * 4 * 8 and out.tokens == 10 * out.responses


def test_halving_keeps_to_its_budget_and_samples_fresh_queries_each_round() -> None:
    draw, calls = synthetic({0.6: 0.45, 0.8: 0.5, 1.0: 0.5, 1.2: 0.45})
    pool_responses = 1000 * 4
    out = strategies.run(Strategy("halving", budget=0.2), spec(), draw, PROBLEMS, pool_responses)
    assert out.responses <= 0.2 * pool_responses
    seen = [q for _, ids, _ in calls for q in ids]
    assert len(seen) == len(set(seen)), "a round re-sampled a query"
    assert calls[0][0] == TEMPERATURES and all(n == 8 for *_, n in calls)
    # Round 1: 400 responses over 4 temperatures x 8 samples = 12 queries; then at most half go on.
    assert len(calls[0][1]) == 12
    assert [len(r["temperatures"]) for r in out.rounds] == [len(c[0]) for c in calls]
    if len(calls) > 1:
        assert len(calls[1][0]) <= 2 and set(calls[1][0]) <= set(calls[0][0])
        assert set(out.rounds[0]["kept"]) == set(calls[1][0])
    assert out.result.temperature in out.rounds[-1]["temperatures"]
    assert out.queries[TEMPERATURES.index(out.result.temperature)] == sum(len(ids) for _, ids, _ in calls)


def test_halving_stops_when_one_temperature_is_far_ahead() -> None:
    draw, calls = synthetic({0.6: 0.05, 0.8: 0.95, 1.0: 0.05, 1.2: 0.02})
    out = strategies.run(Strategy("halving", budget=0.2), spec(), draw, PROBLEMS, 4000)
    assert len(calls) == 1 and out.rounds[0]["kept"] == [0.8]
    assert out.result.temperature == 0.8
    assert out.responses == 12 * 4 * 8


@pytest.mark.parametrize("seed", range(5))
def test_halving_finds_the_best_temperature_when_it_is_clearly_best(seed: int) -> None:
    accuracy = {0.6: 0.2, 0.8: 0.35, 1.0: 0.7, 1.2: 0.3}
    draw, _ = synthetic(accuracy, seed)
    out = strategies.run(Strategy("halving", budget=0.2), spec(), draw, PROBLEMS, 4000)
    assert out.result.temperature == 1.0


def test_estimate_error_over_all_queries_is_the_standard_error_of_the_mean() -> None:
    draw, _ = synthetic({0.6: 0.5, 0.8: 0.5, 1.0: 0.5, 1.2: 0.5})
    problems = PROBLEMS[:20]
    rows = draw([0.8], problems, 8)
    e = Estimate.of(spec("all"), rows, problems)
    cands = candidate_rows(rows, problems, 0, True)
    x, _ = balance.per_query(cands, THRESHOLDS, 2 * len(problems), 2)
    assert e.score == pytest.approx(x[e.best].mean())
    assert e.error == pytest.approx(x[e.best].std(ddof=1) / math.sqrt(20))
    assert e.paired_error(e) == 0.0


def test_a_budget_below_one_query_per_round_still_samples_one_and_writes_plain_json() -> None:
    draw, calls = synthetic({0.6: 0.5, 0.8: 0.5, 1.0: 0.5, 1.2: 0.5})
    out = strategies.run(Strategy("halving", budget=0.01), spec(), draw, PROBLEMS, 1000)
    assert [len(ids) for _, ids, _ in calls] == [1] * len(calls)
    assert out.rounds[0]["estimates"]["0.6"]["stderr"] is None  # one query: no spread to measure
    json.dumps(out.rounds, allow_nan=False)


def test_every_cell_carries_the_standard_error_of_its_score() -> None:
    draw, _ = synthetic({0.6: 0.3, 0.8: 0.5, 1.0: 0.4, 1.2: 0.2})
    out = strategies.full(spec("all"), draw, PROBLEMS)
    rows = [s for s in out.scored if s.sample.temperature == 0.8]
    x, _ = balance.per_query(candidate_rows(rows, PROBLEMS, 0, True), THRESHOLDS, 2 * len(PROBLEMS), 2)
    np.testing.assert_allclose(out.result.errors[1], x.std(axis=1, ddof=1) / math.sqrt(len(PROBLEMS)))


def test_confidence_picks_the_best_lower_bound_and_zero_is_the_plain_maximum() -> None:
    scores = np.array([[0.50, 0.62], [0.58, 0.40]])
    errors = np.array([[0.01, 0.10], [0.01, 0.01]])
    assert balance.pick(scores, errors) == 1  # the highest score, however uncertain
    assert balance.pick(scores, errors, confidence=1.0) == 2  # 0.58 - 0.01 beats 0.62 - 0.10
    assert balance.pick(scores, np.full_like(errors, np.inf)) == 1  # undefined errors do not matter at 0


def test_with_confidence_a_score_that_holds_over_every_query_beats_a_higher_noisier_one() -> None:
    """Each query has three right answers and a wrong one. At τ = -0.5 every query keeps all four (bs 0.75 each);
    at τ = 0.5 the wrong one goes, but so do the right ones of 8 queries whose rewards are 0.4 (bs 1 or 0)."""
    ids, texts, rewards, correct = [], [], [], []
    for k in range(40):
        for j in range(4):
            ids.append(f"q{k}")
            texts.append(f"q{k} {j}")
            rewards.append((0.4 if k < 8 else 0.6) + j / 100 if j < 3 else -0.2)
            correct.append(j < 3)
    cands = balance.candidates(ids, texts, rewards, correct, 0)
    plain = balance.search([cands], [1.0], [-0.5, 0.5], 160, 2, "all")
    bound = balance.search([cands], [1.0], [-0.5, 0.5], 160, 2, "all", confidence=2.0)
    np.testing.assert_allclose(plain.scores, [[0.75, 0.8]])
    assert plain.errors[0, 0] == pytest.approx(0.0) and plain.errors[0, 1] == pytest.approx(0.4 / math.sqrt(39))
    assert plain.threshold == 0.5 and bound.threshold == -0.5
