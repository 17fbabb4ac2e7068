"""TensorBoard for the loop: one point per iteration (training logs its own per step).

Everything logged comes from the iteration's metrics.json, so a resumed run logs what a straight run
logs. `tensorboard --logdir RUN_DIR/tb` shows both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bstar_pl.report.figures import heatmap


def log_iteration(log_dir: Path, iteration: int, metrics: dict[str, Any], search: dict[str, Any] | None) -> None:
    """Write one iteration's scalars (and the search heatmap) to `log_dir`."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(log_dir)) as writer:
        for key, value in flatten(metrics).items():
            writer.add_scalar(key, value, iteration)
        if search and "scores" in search:
            scores = np.array(search["scores"])
            fig = heatmap(scores, search["temperatures"], search["thresholds"], tuple(search["best"]))
            writer.add_figure("search/balance_heatmap", fig, iteration)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of nested dicts as {"a/b/c": value}; text and lists are left out."""
    flat: dict[str, float] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat
