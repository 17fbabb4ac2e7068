"""SFT data: `{query, output}` records -> masked token batches (optionally length-grouped), sharded over ranks.

The loss sees target tokens only; prompt and padding are labelled -100.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import torch
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from bstar_pl.prompt import PLAIN, PromptFormat, prompt_ids, target_ids
from bstar_pl.records import SFTExample, load_examples
from bstar_pl.train.batches import Padded, cut_counts, given_or_read, pad, report_stats, step_loader, tokenizer_of

IGNORE = -100


@dataclass(frozen=True)
class Encoded:
    """One tokenised example; `prompt_cut` / `target_cut` record a truncation."""

    input_ids: list[int]
    labels: list[int]
    prompt_cut: bool
    target_cut: bool


def encode(
    tokenizer: PreTrainedTokenizerBase,
    example: SFTExample,
    max_prompt_len: int,
    max_target_len: int,
    fmt: PromptFormat = PLAIN,
) -> Encoded:
    """Tokenise one example: keep the end of a long prompt (the question's tail sits next to the
    solution) and the start of a long target, whose last kept token is replaced by EOS so a truncated
    example still teaches the model to stop."""
    p = prompt_ids(tokenizer, example.query, fmt)
    t = target_ids(tokenizer, example.output)
    prompt_cut, target_cut = len(p) > max_prompt_len, len(t) > max_target_len
    if prompt_cut:
        p = p[len(p) - max_prompt_len :]
    if target_cut:
        t = [*t[: max_target_len - 1], tokenizer.eos_token_id]
    return Encoded(p + t, [IGNORE] * len(p) + t, prompt_cut, target_cut)


class SFTDataModule(L.LightningDataModule):
    """SFT batches for `SFTModule`.

    Args:
        train_file: JSON-lines / JSON file or `datasets` directory of `{query, output}` rows.
        tokenizer: tokenizer directory; default: the trained model's `model_path`.
        micro_batch_size: examples per rank per forward pass. The optimizer-step batch is
            `micro_batch_size × data-parallel ranks × trainer.accumulate_grad_batches`.
        max_prompt_len / max_target_len: token limits (prompt cut on the left, target on the right).
        steps: optimizer steps per epoch. None: one pass over the data (the remainder that does not
            fill a step batch is left out). Set: exactly that many steps, cycling through seeded
            permutations of the data — how the self-improvement loop trains k steps on new data.
        shuffle: seeded shuffling; False keeps file order (tests, debugging).
        length_group: sort every this many step batches by length together, which cuts padding but makes
            each batch one kind of example where length goes with kind (on the demo's arithmetic mixture,
            64 left P0 at 22% on 3-term problems where 1 reached 76%). 1: batches are random, no grouping.
        seed: data order seed (each epoch draws a new order from it).
        prompt: the prompt format (`chat: true` for an instruct model's chat template); sampling must use
            the same.
    """

    def __init__(
        self,
        train_file: str | None = None,
        tokenizer: str | None = None,
        micro_batch_size: int = 8,
        max_prompt_len: int = 768,
        max_target_len: int = 768,
        steps: int | None = None,
        shuffle: bool = True,
        length_group: int = 1,
        seed: int = 0,
        prompt: PromptFormat = PLAIN,
    ) -> None:
        super().__init__()
        if length_group < 1:
            raise ValueError(f"length_group must be >= 1, got {length_group}")
        self.save_hyperparameters(ignore=["prompt"])
        self.prompt, self.steps, self.seed = prompt, steps, seed  # set_examples may change the last two
        self.window: tuple[int, int] | None = None
        self.examples: list[SFTExample] | None = None
        self.dataset: Padded | None = None
        self.stats: dict[str, int] = {}

    def set_examples(
        self,
        examples: list[SFTExample],
        steps: int | None = None,
        window: tuple[int, int] | None = None,
        seed: int | None = None,
    ) -> None:
        """Train the next fit on `examples` (an iteration's selected data), `steps` optimizer steps, in the order
        `seed` draws (default: as before).

        `window` = (start, stop) trains only steps start … stop - 1 of that stream, so a long stream can
        be trained in several fits (a checkpoint after each) with the batches of one uninterrupted fit.
        The examples are tokenised again only when they change.
        """
        if examples is not self.examples:
            self.examples, self.dataset = examples, None
        self.steps = steps if steps is not None else self.steps
        self.seed = seed if seed is not None else self.seed
        self.window = window

    def setup(self, stage: str) -> None:
        """Tokenise once per data set; log how many prompts and targets were truncated."""
        if self.dataset is not None:
            return
        hp = self.hparams
        examples = given_or_read(self, load_examples)
        tokenizer, pad_id = tokenizer_of(self, hp.tokenizer)
        encoded = [encode(tokenizer, e, hp.max_prompt_len, hp.max_target_len, self.prompt) for e in examples]
        self.dataset = Padded(encoded, padding(pad_id))
        self.stats = {"examples": len(encoded), **cut_counts(encoded)}
        report_stats(self.trainer, "SFT data", self.stats)

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        order = (self.steps, self.seed, hp.shuffle, self.window, hp.length_group)
        return step_loader(self.trainer, self.dataset, hp.micro_batch_size, *order)


def padding(pad_id: int) -> dict[str, tuple[float, torch.dtype]]:
    """How an SFT batch pads: input ids with the tokenizer's padding id, labels with -100 (no loss)."""
    return {"input_ids": (pad_id, torch.long), "labels": (IGNORE, torch.long)}


def collate(batch: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example: input ids with `pad_id`, labels with -100, mask with 0."""
    return pad(batch, padding(pad_id))
