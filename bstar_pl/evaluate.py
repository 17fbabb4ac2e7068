"""Metrics of sampled responses, per temperature: accuracy, Pass@K, Pass@K-S and unique correct answers.

Grading is the task's (`grade(text, problem)`); `check`, where a task has one, also verifies the steps.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

from bstar_pl.records import Problem, Sample, temperature_key

Grader = Callable[[str, Problem], bool]


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


def format_table(table: dict[str, dict[str, float]]) -> str:
    """A fixed-width text table, one row per temperature."""
    columns = list(next(iter(table.values())))
    lines = ["  ".join(["temp", *(f"{c:>14}" for c in columns)])]
    for key, row in table.items():
        lines.append("  ".join([key, *(f"{row[c]:>14.3f}" if c != "problems" else f"{row[c]:>14}" for c in columns)]))
    return "\n".join(lines)
