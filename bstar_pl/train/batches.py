"""Batches for SFT and PRM fits: seeded, length-grouped optimizer-step batches cut into this rank's micro-batches,
and right-padded tensors of tokenised examples.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, DistributedSampler
from transformers import AutoTokenizer, PreTrainedTokenizerBase


def step_batches(lengths: Sequence[int], step_size: int, n_steps: int, seed: int, group: int = 64) -> list[list[int]]:
    """`n_steps` batches of `step_size` example indices, each batch of similar lengths.

    Epochs of the data are seeded permutations laid end to end (so a stream longer than the data
    never repeats an example before all were used); every `group` batches are sorted by length so
    padding stays low, and the batch order is shuffled so short and long batches mix.
    """
    need = n_steps * step_size
    stream: list[int] = []
    epoch = 0
    while len(stream) < need:
        order = list(range(len(lengths)))
        random.Random(f"{seed}/{epoch}").shuffle(order)
        stream += order
        epoch += 1
    stream = stream[:need]
    chunk = step_size * group
    batches = []
    for start in range(0, need, chunk):
        part = sorted(stream[start : start + chunk], key=lambda i: -lengths[i])
        batches += [part[j : j + step_size] for j in range(0, len(part), step_size)]
    random.Random(f"{seed}/order").shuffle(batches)
    return batches


class StepSampler(DistributedSampler):
    """Yields this rank's micro-batches (lists of indices) of length-grouped optimizer-step batches.

    A step batch of `micro * replicas * accumulate` examples is sorted by length and cut into
    micro-batches; micro-batch `a * replicas + rank` goes to `rank` at accumulation index `a`. So one
    process accumulating 2 sees exactly the examples two processes see: runs compare exactly.
    It is a `DistributedSampler` so that Lightning uses it as is instead of injecting its own.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        micro_batch_size: int,
        num_replicas: int,
        rank: int,
        accumulate: int,
        steps: int | None,
        seed: int,
        shuffle: bool,
        window: tuple[int, int] | None = None,
        group: int = 64,
    ) -> None:
        super().__init__(lengths, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.lengths, self.micro, self.accumulate, self.group = lengths, micro_batch_size, accumulate, group
        step_size = micro_batch_size * num_replicas * accumulate
        self.steps = len(lengths) // step_size if steps is None else steps
        if self.steps < 1:
            raise ValueError(f"{len(lengths)} examples do not fill one step batch of {step_size}")
        self.window = window or (0, self.steps)
        if not 0 <= self.window[0] < self.window[1] <= self.steps:
            raise ValueError(f"window {self.window} is not a non-empty part of {self.steps} steps")

    def step_batches(self) -> list[list[int]]:
        """All ranks' step batches of the current epoch, or of the window of the one fixed stream."""
        size = self.micro * self.num_replicas * self.accumulate
        if not self.shuffle:
            batches = [[(s * size + j) % len(self.lengths) for j in range(size)] for s in range(self.steps)]
        else:
            # A window is one part of a stream trained in several fits: the order must not change per fit.
            epoch = 0 if self.window != (0, self.steps) else self.epoch
            batches = step_batches(self.lengths, size, self.steps, seed=self.seed + 7919 * epoch, group=self.group)
        return batches[self.window[0] : self.window[1]]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.step_batches():
            for a in range(self.accumulate):
                k = (a * self.num_replicas + self.rank) * self.micro
                yield batch[k : k + self.micro]

    def __len__(self) -> int:
        return (self.window[1] - self.window[0]) * self.accumulate


class Padded(torch.utils.data.Dataset):
    """Tokenised examples (records with an `input_ids` list and other per-token lists); indexing with a list of
    indices returns one batch, each field right-padded with its fill value, plus the attention mask."""

    def __init__(self, encoded: Sequence[Any], fill: dict[str, tuple[float, torch.dtype]]) -> None:
        self.encoded, self.fill = list(encoded), fill

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        return pad([self.encoded[i] for i in indices], self.fill)


def pad(batch: Sequence[Any], fill: dict[str, tuple[float, torch.dtype]]) -> dict[str, torch.Tensor]:
    """Right-pad every field of `fill` (name -> (fill value, dtype)) to the longest example; mask 1 on real tokens."""
    width = max(len(e.input_ids) for e in batch)
    out = {name: torch.full((len(batch), width), value, dtype=dtype) for name, (value, dtype) in fill.items()}
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, e in enumerate(batch):
        n = len(e.input_ids)
        for name, tensor in out.items():
            tensor[row, :n] = torch.tensor(getattr(e, name))
        mask[row, :n] = 1
    return {**out, "attention_mask": mask}


def cut_counts(encoded: Sequence[Any]) -> dict[str, int]:
    """How many tokenised examples lost the start of their prompt, and the end of their target."""
    return {
        "prompts_truncated": sum(e.prompt_cut for e in encoded),
        "targets_truncated": sum(e.target_cut for e in encoded),
    }


def given_or_read(data: L.LightningDataModule, read: Callable[[str], list[Any]]) -> list[Any]:
    """A data module's examples: those given by `set_examples`, else `read(train_file)` (kept for the next fit)."""
    if data.examples is None:
        if data.hparams.train_file is None:
            raise ValueError(f"{type(data).__name__}: give train_file or call set_examples()")
        data.examples = read(data.hparams.train_file)
    return data.examples


def tokenizer_of(data: L.LightningDataModule, path: str | None) -> tuple[PreTrainedTokenizerBase, int]:
    """The data module's tokenizer (`path`, default: the trained model's `model_path`) and its padding id."""
    tokenizer = AutoTokenizer.from_pretrained(path or data.trainer.lightning_module.hparams.model_path)
    return tokenizer, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def report_stats(trainer: L.Trainer, name: str, stats: dict[str, int]) -> None:
    """Print a data module's counts (examples, cuts) once and log them to the trainer's logger."""
    rank_zero_info(f"{name}: {stats}")
    if trainer.logger is not None:
        trainer.logger.log_metrics({f"data/{k}": v for k, v in stats.items()}, trainer.global_step)


def step_loader(
    trainer: L.Trainer,
    dataset: torch.utils.data.Dataset,
    micro_batch_size: int,
    steps: int | None,
    seed: int,
    shuffle: bool,
    window: tuple[int, int] | None = None,
    group: int = 64,
) -> DataLoader:
    """This rank's loader of step batches over `dataset` (whose `encoded` items have input_ids), every `group`
    of them sorted by length together (1: no length grouping)."""
    assert dataset is not None
    dp = trainer.distributed_sampler_kwargs or {"num_replicas": 1, "rank": 0}
    lengths = [len(e.input_ids) for e in dataset.encoded]
    sampler = StepSampler(
        lengths,
        micro_batch_size,
        dp["num_replicas"],
        dp["rank"],
        trainer.accumulate_grad_batches,
        steps,
        seed,
        shuffle,
        window,
        group,
    )
    return DataLoader(dataset, sampler=sampler, batch_size=None)


def padding_waste(lengths: Sequence[Sequence[int]]) -> float:
    """Fraction of padded positions over batches given as lists of example lengths."""
    padded = sum(len(b) * max(b) for b in lengths)
    return 1 - sum(map(sum, lengths)) / padded if padded else 0.0
