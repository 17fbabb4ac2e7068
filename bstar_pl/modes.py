"""The loop's modes in one table: B-STaR and the paper's baselines, and two references at equal training compute.

mode           trains on                 (t, τ)               weights, optimizer, schedule
bstar          its own selected samples  balance-score search carry over (one cosine over all iterations)
online_rft     its own selected samples  fixed                carry over
iterative_rft  its own selected samples  fixed                weights carry over; a new optimizer and schedule
rest_em        its own selected samples  fixed                every iteration trains P0 afresh (STaR / ReST-EM)
control        the SFT data              -                    carry over: "just training more"
oracle         the pool's references     -                    carry over: what perfect selection could give
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Mode:
    """What a mode does each iteration (see the table above).

    Args:
        data: what an iteration trains on: "samples" (its own, selected), "sft" (the SFT data) or "gold" (the pool
            problems' reference solutions).
        searches: choose (t, τ) by the balance score; else the fixed `selection.temperature`, `.threshold`.
        continuing: one module, optimizer and LR schedule over all iterations; else each iteration starts anew.
        restarts: a new iteration starts from P0 rather than from the last policy (when not continuing).
        replays: `train.replay` mixes SFT examples into what it trains on.
    """

    data: Literal["samples", "sft", "gold"]
    searches: bool = False
    continuing: bool = True
    restarts: bool = False
    replays: bool = True

    @property
    def samples(self) -> bool:
        return self.data == "samples"


MODES = {
    "bstar": Mode("samples", searches=True),
    "online_rft": Mode("samples"),
    "iterative_rft": Mode("samples", continuing=False),
    "rest_em": Mode("samples", continuing=False, restarts=True),
    "control": Mode("sft", replays=False),
    "oracle": Mode("gold"),
}
