"""Run directories of `bstar-pl iterate` read back for reports: each run's config and per-iteration metrics, runs
grouped by their config less `seed` and `out`, and a metric's mean, std, min and max over a group's seeds.

A run still in progress is read up to its last complete iteration (the last `iter_XX/metrics.json` of an
unbroken sequence from `iter_00`). A key a run's metrics lack is skipped, never an error.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bstar_pl.rundir import iteration_dir

# Config keys that differ between the seeds of one experiment.
PER_SEED = ("seed", "out")


class RunError(ValueError):
    """A directory that is not a run, or an unreadable artefact in one; the message names it."""


@dataclass
class RunRecord:
    """One run: `iterations[i]` is iteration i's metrics.json (0: the initial policy), `searches[i]` its
    search.json where there is one (B-STaR), `planned` the config's number of iterations."""

    path: Path
    config: dict[str, Any]
    iterations: list[dict[str, Any]]
    searches: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def planned(self) -> int | None:
        n = self.config.get("iterations")
        return n if isinstance(n, int) else None

    @property
    def complete(self) -> bool:
        return self.planned is not None and len(self.iterations) >= self.planned + 1


@dataclass
class Group:
    """Runs whose configs agree but for `seed` and `out`: one experiment over several seeds."""

    label: str
    config: dict[str, Any]
    runs: list[RunRecord]


@dataclass(frozen=True)
class Stat:
    """A metric at one iteration over a group's seeds (std: sample std, 0 for one seed)."""

    mean: float
    std: float
    lo: float
    hi: float
    n: int


def load_run(path: str | Path) -> RunRecord:
    """Read a run directory; a RunError names a directory that is not a run or a file that is not JSON."""
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"{path}: no such run directory")
    if not (path / "config.json").is_file():
        raise RunError(f"{path}: not a run directory (no config.json)")
    config = read_json(path / "config.json")
    iterations: list[dict[str, Any]] = []
    searches: dict[int, dict[str, Any]] = {}
    while (folder := iteration_dir(path, len(iterations))).joinpath("metrics.json").is_file():
        i = len(iterations)
        metrics = read_json(folder / "metrics.json")
        if (folder / "search.json").is_file():
            searches[i] = read_json(folder / "search.json")
            if "balance_score" in searches[i]:  # metrics.json repeats it; older runs may not
                metrics.setdefault("search", {"balance_score": searches[i]["balance_score"]})
            fixed = fixed_pair_score(searches[i], config.get("selection", {}))
            if fixed is not None:
                metrics.setdefault("search", {})["fixed_pair"] = fixed
        iterations.append(metrics)
    return RunRecord(path, config, iterations, searches)


def fixed_pair_score(search: dict[str, Any], selection: dict[str, Any]) -> float | None:
    """The balance score a search grid gives the fixed (t, τ) of `selection` (Online RFT's pair): what B-STaR's
    choice is measured against. None where the grid lacks the pair."""
    try:
        t = [abs(x - selection["temperature"]) < 1e-6 for x in search["temperatures"]].index(True)
        tau = [abs(x - selection["threshold"]) < 1e-6 for x in search["thresholds"]].index(True)
        return float(search["scores"][t][tau])
    except (KeyError, TypeError, ValueError, IndexError):
        return None


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise RunError(f"{path}: unreadable ({e})") from None
    except json.JSONDecodeError as e:
        raise RunError(f"{path}:{e.lineno}: bad JSON: {e.msg} (column {e.colno})") from None
    if not isinstance(value, dict):
        raise RunError(f"{path}: expected a JSON object")
    return value


def group_runs(runs: Sequence[RunRecord]) -> list[Group]:
    """Group runs by config less `seed` and `out`, in order of first appearance. A group is labelled by
    its mode, and where groups share a mode, by the config fields in which they differ as well."""
    keyed: dict[str, Group] = {}
    for run in runs:
        config = {k: v for k, v in run.config.items() if k not in PER_SEED}
        key = json.dumps(config, sort_keys=True, default=str)
        keyed.setdefault(key, Group(str(config.get("mode", "run")), config, [])).runs.append(run)
    groups = list(keyed.values())
    for mode in {g.label for g in groups}:
        same = [g for g in groups if g.label == mode]
        if len(same) < 2:
            continue
        flat = [flatten(g.config) for g in same]
        differ = sorted({k for f in flat for k in f if any(f.get(k) != other.get(k) for other in flat)})
        for g, f in zip(same, flat):
            fields = ", ".join(f"{k}={f.get(k, '-')}" for k in differ)
            g.label = f"{mode} ({fields})"
    for g in groups:
        g.runs.sort(key=lambda r: (str(r.config.get("seed")), str(r.path)))
    return groups


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config as {"a.b": "value"}, values spelled as JSON for comparison and labels."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, str) else json.dumps(value)
    return flat


def value(metrics: dict[str, Any], keys: Sequence[str], need: str | None = None) -> float | None:
    """The number at `keys` in nested metrics, or None where a key is missing or the leaf is no number,
    or where the leaf's table lacks the key `need`."""
    node: Any = metrics
    for key in keys:
        if not isinstance(node, dict) or key not in node or (key == keys[-1] and need and need not in node):
            return None
        node = node[key]
    if isinstance(node, bool) or not isinstance(node, (int, float)) or not math.isfinite(node):
        return None
    return float(node)


def series(group: Group, keys: Sequence[str], need: str | None = None) -> dict[int, Stat]:
    """Iteration -> the metric at `keys` (in a table with the key `need`) over the group's runs that have
    it there; empty where none has."""
    points: dict[int, list[float]] = {}
    for run in group.runs:
        for i, metrics in enumerate(run.iterations):
            x = value(metrics, keys, need)
            if x is not None:
                points.setdefault(i, []).append(x)
    return {i: stat(xs) for i, xs in sorted(points.items())}


def levels_accuracy(row: dict[str, Any], levels: Sequence[int]) -> float | None:
    """Greedy Pass@1 over the problems of `levels`, from a test table's `by_level` rows (None: none there)."""
    rows = [row["by_level"][str(k)] for k in levels if str(k) in row.get("by_level", {})]
    total = sum(r["problems"] for r in rows)
    return sum(r["accuracy"] * r["problems"] for r in rows) / total if total else None


def levels_series(group: Group, test: str, levels: Sequence[int]) -> dict[int, Stat]:
    """Iteration -> greedy Pass@1 over the `levels` of test set `test`, over the group's runs."""
    points: dict[int, list[float]] = {}
    for run in group.runs:
        for i, metrics in enumerate(run.iterations):
            row = metrics.get("test", {}).get(test) if isinstance(metrics.get("test"), dict) else None
            x = levels_accuracy(row, levels) if isinstance(row, dict) else None
            if x is not None:
                points.setdefault(i, []).append(x)
    return {i: stat(xs) for i, xs in sorted(points.items())}


def stat(xs: Sequence[float]) -> Stat:
    n = len(xs)
    mean = sum(xs) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return Stat(mean, std, min(xs), max(xs), n)
