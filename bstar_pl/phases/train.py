"""Train: the policy on what the iteration selected, `train.steps` optimizer steps (resumable from its checkpoints);
then the new weights go to disk as an HF checkpoint (the resume point) and into the engine in place."""

from __future__ import annotations

from pathlib import Path

from bstar_pl.dist import say
from bstar_pl.engine import Engine
from bstar_pl.records import SFTExample
from bstar_pl.rundir import Clock
from bstar_pl.train.policy import PolicyTrainer


def train(
    trainer: PolicyTrainer, engine: Engine, examples: list[SFTExample], i: int, start: Path, out: Path, clock: Clock
) -> None:
    """The phase: iteration `i` trains from `start` (the last policy, where no module carries over) and exports
    P_i to `out`. With sleep mode (GPU) the engine's memory is freed while the trainer trains."""
    say(f"[iter {i}] train: {trainer.cfg.train.steps} steps on {len(examples)} examples")
    if engine.sleep_mode:
        engine.sleep()
    with clock.timed("training"):
        tokens = trainer.train(i, examples, start)
    clock.rate("training_tokens_per_s_per_rank", tokens, clock.seconds["training"])
    with clock.timed("export"):
        trainer.export(out)
    with clock.timed("swap"):
        trainer.swap(engine, out)
