"""`bstar-pl report RUN_DIR ... --out DIR`: a markdown report (DIR/report.md) with PNG plots of runs.

Runs that differ only in `seed` share a line: the mean over seeds with a min–max band; the tables give
mean ± std and the number of seeds at each iteration. Reads each iteration's metrics.json (and search.json).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bstar_pl.atomic import atomic_write_text
from bstar_pl.report.figures import Panel, plot, plot_levels, search_heatmap
from bstar_pl.report.runs import Group, RunRecord, Stat, group_runs, levels_series, load_run, series

# Sampled test metrics of `evaluate.policy_metrics`, drawn where metrics.json has them.
SAMPLED = {
    "pass_at_k": "Pass@{k}",
    "pass_at_k_s": "Pass@{k}-{s}",
    "majority_at_k": "Maj@{k}",
    "reward_at_k_s": "Reward@{k}-{s}",
    "best_of_k": "Best-of-{k}",
    "sample_accuracy": "random pick of {k}",
    "prm_auc_within": "PRM AUC within a problem",
}


SEARCH = [
    Panel("temperature t", ("temperature",)),
    Panel("threshold τ", ("threshold",)),
    Panel("balance score (search)", ("search", "balance_score")),
    Panel(
        "balance score of the fixed pair (selection.temperature, .threshold) in the same search",
        ("search", "fixed_pair"),
    ),
    Panel("balance score (selected data)", ("selected", "balance_score")),
]
SELECTED = [
    Panel("selected responses", ("selected", "size")),
    Panel("answer accuracy of selected", ("selected", "accuracy")),
    Panel("share of selected with wrong steps", ("selected", "wrong_steps")),
    Panel("same, answer-only selection from the same samples", ("answer_only", "wrong_steps")),
    Panel("unique correct per query", ("selected", "unique_correct_per_query")),
]


def write_report(runs: Sequence[str | Path], out: Path, hard_levels: Sequence[int] = ()) -> Path:
    """Read the run directories, draw the figures and write `out`/report.md; return its path.

    With `hard_levels`, the report leads with greedy Pass@1 over those levels of each test set (the levels
    beyond the SFT data, where self-improvement has to show), one line per group, P0 as a reference."""
    records = [load_run(path) for path in runs]
    groups = group_runs(records)
    greedy = [Panel(f"{name}: greedy Pass@1", ("test", name, "accuracy")) for name in tests(records)]
    figures = [
        ("search", "Search: temperature, threshold and balance score", SEARCH),
        ("test", "Test sets: greedy Pass@1", greedy),
        ("sampled", "Test sets: sampled metrics", sampled_panels(records)),
        ("selected", "Selected data", SELECTED),
    ]
    lines = ["# B-STaR runs", ""]
    for name in tests(records) if hard_levels else []:
        columns = {g.label: levels_series(g, name, hard_levels) for g in groups}
        if not any(columns.values()):
            continue
        title = f"{name}: greedy Pass@1 on level{'s' * (len(hard_levels) > 1)} {', '.join(map(str, hard_levels))}"
        plot_levels(columns, title, out / f"hard_{name}.png")
        lines += [f"## {title}", "", f"![{title}](hard_{name}.png)", "", *stat_table(columns), ""]
    lines += runs_table(groups)
    for name, heading, panels in figures:
        drawn = [p for p in panels if any(series(g, p.keys, p.need) for g in groups)]
        if not drawn:
            continue
        plot(groups, drawn, out / f"{name}.png")
        lines += ["", f"## {heading}", "", f"![{heading}]({name}.png)"]
        for panel in drawn:
            lines += ["", f"### {panel.title}", "", *metric_table(groups, panel)]
    for k, group in enumerate(groups):
        run = group.runs[0]
        last = max(run.searches, default=None)
        if last is not None and {"scores", "temperatures", "thresholds", "best"} <= set(run.searches[last]):
            file = f"search_grid_{k}.png"
            search_heatmap(run.searches[last], out / file)
            lines += ["", f"## Balance score over the grid: {group.label}, {run.path}, iteration {last}"]
            lines += ["", f"![balance score grid]({file})"]
    lines += ["", "Bands: min–max over seeds. Tables: mean ± sample std (n = seeds at that iteration)."]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    return out / "report.md"


def tests(runs: Sequence[RunRecord]) -> list[str]:
    """Test set names in order of first appearance."""
    names: dict[str, None] = {}
    for run in runs:
        for metrics in run.iterations:
            test = metrics.get("test")
            names.update(dict.fromkeys(test if isinstance(test, dict) else {}))
    return list(names)


def test_row(metrics: dict[str, Any], name: str) -> Any:
    test = metrics.get("test")
    return test.get(name) if isinstance(test, dict) else None


def sampled_panels(runs: Sequence[RunRecord]) -> list[Panel]:
    """A panel per test set and sampled metric; titles carry K and S as the runs recorded them."""
    panels = []
    for name in tests(runs):
        rows = [row for r in runs for m in r.iterations if isinstance(row := test_row(m, name), dict)]
        k = next((row["k"] for row in rows if "s" in row and "k" in row), "K")
        s = next((row["s"] for row in rows if "s" in row), "S")
        # Only tables with an S come from sampling: the greedy table's pass_at_k is its accuracy.
        panels += [Panel(f"{name}: {t.format(k=k, s=s)}", ("test", name, key), "s") for key, t in SAMPLED.items()]
    return panels


def runs_table(groups: Sequence[Group]) -> list[str]:
    lines = ["| group | seed | run | complete iterations |", "|---|---|---|---|"]
    for group in groups:
        for run in group.runs:
            done = len(run.iterations) - 1
            of = f" of {run.planned}" if run.planned is not None else ""
            state = "" if run.complete else " (in progress)" if done >= 0 else " (no iteration yet)"
            lines.append(f"| {group.label} | {run.config.get('seed', '-')} | {run.path} | {max(done, 0)}{of}{state} |")
    return lines


def metric_table(groups: Sequence[Group], panel: Panel) -> list[str]:
    """Iterations down, groups across: mean ± std (n)."""
    return stat_table({g.label: series(g, panel.keys, panel.need) for g in groups})


def stat_table(columns: dict[str, dict[int, Stat]]) -> list[str]:
    """Iterations down, one column per label: mean ± std (n)."""
    iterations = sorted({i for c in columns.values() for i in c})
    lines = ["| iteration | " + " | ".join(columns) + " |", "|---:|" + "---|" * len(columns)]
    for i in iterations:
        lines.append(f"| {i} | " + " | ".join(cell(c.get(i)) for c in columns.values()) + " |")
    return lines


def cell(s: Stat | None) -> str:
    """mean ± std (n), both to the mean's precision: 0.205 ± 0.007 (n=2), 301.0 ± 1.0 (n=3)."""
    if s is None:
        return "–"
    digits = 1 if abs(s.mean) >= 100 else 3
    spread = f" ± {s.std:.{digits}f}" if s.n > 1 else ""
    return f"{s.mean:.{digits}f}{spread} (n={s.n})"
