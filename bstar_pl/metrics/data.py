"""Metrics of sampled data: the pool's sample per temperature, and the data an iteration selected to train on;
and the fixed-width tables the commands print."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from bstar_pl.metrics.policy import Grader
from bstar_pl.records import Problem, Sample, Selected, temperature_key


def sample_metrics(
    problems: Sequence[Problem],
    samples: Sequence[Sample],
    grade: Grader,
    check: Grader | None = None,
    s: int = 4,
) -> dict[str, dict[str, float]]:
    """Per temperature: answer accuracy, clean accuracy (answer and every step right), Pass@K (some
    sample correct), Pass@K-S (at least `s` distinct correct texts), mean distinct correct texts per
    problem, and the share of samples cut by the length limit. K is the samples per problem."""
    by_id = {p.id: p for p in problems}
    groups: dict[str, dict[str, list[Sample]]] = defaultdict(lambda: defaultdict(list))
    for sample in samples:
        groups[temperature_key(sample.temperature)][sample.problem_id].append(sample)
    table = {}
    for key, per_problem in sorted(groups.items()):
        correct = clean = truncated = total = pass_k = pass_ks = unique = 0
        for pid, group in per_problem.items():
            problem = by_id[pid]
            ok = [x for x in group if grade(x.text, problem)]
            correct += len(ok)
            clean += sum(check(x.text, problem) for x in ok) if check else len(ok)
            truncated += sum(x.truncated for x in group)
            total += len(group)
            distinct = len({x.text for x in ok})
            pass_k += distinct > 0
            pass_ks += distinct >= s
            unique += distinct
        n = len(per_problem)
        table[key] = {
            "problems": n,
            "k": total / n,
            "accuracy": correct / total,
            "clean_accuracy": clean / total,
            "pass_at_k": pass_k / n,
            f"pass_at_k_{s}": pass_ks / n,
            "unique_correct": unique / n,
            "truncated": truncated / total,
        }
    return table


def selection_metrics(
    selected: Sequence[Selected],
    problems: dict[str, Problem],
    grade: Grader,
    check: Grader | None,
    n_star: int,
) -> dict[str, float]:
    """What an iteration trains on: size, answer accuracy, share with every step right (where the task
    can check steps), queries covered, distinct correct responses and distinct equations per covered
    query, and the balance score of exactly this data (n* = `n_star`)."""
    per_query: dict[str, list[tuple[str, bool]]] = defaultdict(list)
    for s in selected:
        per_query[s.problem_id].append((s.output, grade(s.output, problems[s.problem_id])))
    size = len(selected)
    correct = sum(ok for rows in per_query.values() for _, ok in rows)
    balance = unique = equations = 0.0
    for rows in per_query.values():
        good = [text for text, ok in rows if ok]
        unique += len(set(good))
        balance += min(len(set(good)) / n_star, 1.0) * len(set(good)) / len(rows)
        equations += len({_normal(step) for text in good for step in text.split("\n") if "=" in step})
    covered = max(len(per_query), 1)
    metrics = {
        "size": size,
        "queries": len(per_query),
        "accuracy": correct / size if size else 0.0,
        "unique_correct_per_query": unique / covered,
        "distinct_equations_per_query": equations / covered,
        "balance_score": balance / covered,
    }
    if check is not None:
        clean = sum(check(s.output, problems[s.problem_id]) for s in selected)
        metrics["wrong_steps"] = (correct - clean) / size if size else 0.0
    return metrics


def _normal(step: str) -> str:
    return "".join(step.split())


def format_table(table: dict[str, dict[str, Any]], label: str = "temp") -> str:
    """A fixed-width text table, one row per key of `table` (a temperature, a level, ...); the columns
    are the first row's, and a value a row lacks prints as "-"."""
    columns = list(next(iter(table.values())))
    width = max(len(label), *(len(key) for key in table))
    lines = ["  ".join([f"{label:<{width}}", *(f"{c:>14}" for c in columns)])]
    for key, row in table.items():
        cells = [_cell(row.get(c), c) for c in columns]
        lines.append("  ".join([f"{key:<{width}}", *cells]))
    return "\n".join(lines)


def _cell(value: Any, column: str) -> str:
    if value is None:
        return f"{'-':>14}"
    if column == "problems" or isinstance(value, int):
        return f"{value:>14}"
    return f"{value:>14.3f}"
