"""SFT data: `{query, output}` records -> masked token batches (optionally length-grouped), sharded over ranks.

The loss sees target tokens only; prompt and padding are labelled -100.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, DistributedSampler
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from bstar_pl.records import RecordError, SFTExample, from_dict, read_jsonl
from bstar_pl.template import PLAIN, PromptFormat, prompt

IGNORE = -100


def prompt_ids(tokenizer: PreTrainedTokenizerBase, query: str, fmt: PromptFormat = PLAIN) -> list[int]:
    """Token ids of the policy prompt, the same for training, sampling and the PRM: the plain B-STaR prompt
    with default special tokens, or the tokenizer's chat template rendered and tokenised as it stands."""
    if not fmt.chat:
        return tokenizer(prompt(query)).input_ids
    if not tokenizer.chat_template:
        raise ValueError(f"prompt.chat is set but {tokenizer.name_or_path} has no chat template")
    text = tokenizer.apply_chat_template(fmt.messages(query), add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False).input_ids


def target_ids(tokenizer: PreTrainedTokenizerBase, output: str) -> list[int]:
    """Token ids of a response followed by EOS, the token the sampler stops on."""
    return [*tokenizer(output, add_special_tokens=False).input_ids, tokenizer.eos_token_id]


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


def load_examples(source: str | os.PathLike[str] | Any) -> list[SFTExample]:
    """SFT examples from a JSON-lines file, a JSON list, a `datasets` directory or a `datasets.Dataset`.

    Rows may carry more fields (`selected.jsonl` does); a malformed row fails naming file and line.
    """
    if not isinstance(source, str | os.PathLike):
        return _rows(source, "dataset")
    path = Path(source)
    if path.is_dir():
        import datasets

        return _rows(datasets.load_from_disk(str(path)), str(path))
    if path.suffix == ".json":
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RecordError(f"{path}: no such file") from None
        except json.JSONDecodeError as e:
            raise RecordError(f"{path}:{e.lineno}: bad JSON: {e.msg} (column {e.colno})") from None
        if not isinstance(rows, list):
            raise RecordError(f"{path}: expected a JSON list of {{query, output}} objects")
        return _rows(rows, str(path))
    return read_jsonl(path, SFTExample, ignore_unknown=True)


def _rows(rows: Any, where: str) -> list[SFTExample]:
    """Validate in-memory rows; errors name `where` and the row index."""
    examples = []
    for i, row in enumerate(rows):
        try:
            examples.append(from_dict(SFTExample, row, ignore_unknown=True))
        except (TypeError, ValueError) as e:
            raise RecordError(f"{where}[{i}]: {e}") from None
    return examples


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


class Tokenised(torch.utils.data.Dataset):
    """Encoded examples; indexing with a list of indices returns one padded batch."""

    def __init__(self, encoded: list[Encoded], pad_id: int) -> None:
        self.encoded, self.pad_id = encoded, pad_id

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        return collate([self.encoded[i] for i in indices], self.pad_id)


def collate(batch: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example: input ids with `pad_id`, labels with -100, mask with 0."""
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, e in enumerate(batch):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


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
        self.prompt, self.length_group = prompt, length_group
        self.train_file, self.tokenizer_path = train_file, tokenizer
        self.micro_batch_size, self.max_prompt_len, self.max_target_len = (
            micro_batch_size,
            max_prompt_len,
            max_target_len,
        )
        self.steps, self.shuffle, self.seed = steps, shuffle, seed
        self.window: tuple[int, int] | None = None
        self.examples: list[SFTExample] | None = None
        self.dataset: Tokenised | None = None
        self.stats: dict[str, int] = {}

    def set_examples(
        self, examples: list[SFTExample], steps: int | None = None, window: tuple[int, int] | None = None
    ) -> None:
        """Train the next fit on `examples` (the driver's new selected data), `steps` optimizer steps.

        `window` = (start, stop) trains only steps start … stop - 1 of that stream, so a long stream can
        be trained in several fits (a checkpoint after each) with the batches of one uninterrupted fit.
        The examples are tokenised again only when they change.
        """
        if examples is not self.examples:
            self.examples, self.dataset = examples, None
        self.steps = steps if steps is not None else self.steps
        self.window = window

    def setup(self, stage: str) -> None:
        """Tokenise once per data set; log how many prompts and targets were truncated."""
        if self.dataset is not None:
            return
        if self.examples is None:
            if self.train_file is None:
                raise ValueError("SFTDataModule: give train_file or call set_examples()")
            self.examples = load_examples(self.train_file)
        path = self.tokenizer_path or self.trainer.lightning_module.hparams.model_path
        tokenizer = AutoTokenizer.from_pretrained(path)
        encoded = [encode(tokenizer, e, self.max_prompt_len, self.max_target_len, self.prompt) for e in self.examples]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.dataset = Tokenised(encoded, pad)
        self.stats = {
            "examples": len(encoded),
            "prompts_truncated": sum(e.prompt_cut for e in encoded),
            "targets_truncated": sum(e.target_cut for e in encoded),
        }
        report_stats(self.trainer, "SFT data", self.stats)

    def train_dataloader(self) -> DataLoader:
        return step_loader(
            self.trainer,
            self.dataset,
            self.micro_batch_size,
            self.steps,
            self.seed,
            self.shuffle,
            self.window,
            self.length_group,
        )


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
