"""The report's figures (matplotlib, drawn off-screen): metrics over iterations with a band over seeds, hard-level
Pass@1 with P0 and the oracle as references, and the balance score over the search grid (TensorBoard shows it too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bstar_pl.atomic import atomic_path
from bstar_pl.report.runs import Group, Stat, series


@dataclass(frozen=True)
class Panel:
    """One plot: a metric (the path of keys into metrics.json) over iterations, read only from tables that
    also hold the key `need`."""

    title: str
    keys: tuple[str, ...]
    need: str | None = None


def plot(groups: Sequence[Group], panels: Sequence[Panel], path: Path) -> None:
    """One axes per panel, every group on each: mean over seeds, shaded from min to max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    cols = min(len(panels), 3)
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, panel in zip(axes.flat, panels):
        for k, group in enumerate(groups):
            points = series(group, panel.keys, panel.need)
            if not points:
                continue
            xs = list(points)
            color = colors[k % len(colors)]
            ax.plot(xs, [p.mean for p in points.values()], "o-", color=color, label=group.label, markersize=4)
            if any(p.n > 1 for p in points.values()):
                lo, hi = [p.lo for p in points.values()], [p.hi for p in points.values()]
                ax.fill_between(xs, lo, hi, color=color, alpha=0.2, linewidth=0)
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel("iteration")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    for ax in axes.flat[1 : len(panels)]:  # the first panel may lack a group the others have
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 3), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.06 + 0.03 * (math.ceil(len(labels) / 3) - 1), 1, 1))
    save(fig, path)


def plot_levels(columns: dict[str, dict[int, Stat]], title: str, path: Path) -> None:
    """One axes: a line per group (mean over seeds, min–max band); P0 (iteration 0, shared by all groups) as a
    dotted reference line, and the oracle, an upper bound rather than a method, dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    p0 = next((c[0].mean for c in columns.values() if 0 in c), None)
    for k, (label, points) in enumerate(columns.items()):
        xs = list(points)
        style = "o--" if label.startswith("oracle") else "o-"
        ax.plot(xs, [p.mean for p in points.values()], style, color=colors[k % len(colors)], label=label, ms=4)
        if any(p.n > 1 for p in points.values()):
            lo, hi = [p.lo for p in points.values()], [p.hi for p in points.values()]
            ax.fill_between(xs, lo, hi, color=colors[k % len(colors)], alpha=0.2, linewidth=0)
    if p0 is not None:
        ax.axhline(p0, color="gray", linestyle=":", label="P0")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("iteration")
    ax.set_ylabel("greedy Pass@1")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    save(fig, path)


def heatmap(scores: np.ndarray, temperatures: list[float], thresholds: list[float], best: tuple[int, int]) -> Any:
    """A matplotlib figure of the balance score over the grid, the chosen cell marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    image = ax.imshow(
        scores,
        aspect="auto",
        origin="lower",
        cmap="viridis",
        extent=(thresholds[0], thresholds[-1], -0.5, len(temperatures) - 0.5),
    )
    ax.set_yticks(range(len(temperatures)), [f"{t:.2f}" for t in temperatures])
    ax.set_xlabel("reward threshold τ")
    ax.set_ylabel("temperature t")
    ax.plot(thresholds[best[1]], best[0], "r+", markersize=14, mew=2)
    fig.colorbar(image, ax=ax, label="balance score")
    fig.tight_layout()
    return fig


def search_heatmap(search: dict[str, Any], path: Path) -> None:
    """The balance score over the (t, τ) grid of one search.json, the chosen cell marked, as a PNG."""
    import numpy as np

    fig = heatmap(np.array(search["scores"]), search["temperatures"], search["thresholds"], tuple(search["best"]))
    save(fig, path)


def save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
