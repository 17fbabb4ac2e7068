"""PRM data: prm-v4 or Math-Shepherd rows -> token batches with a label and a loss weight per token.

Every token of a step carries that step's label (or only the step's score token does, `train_on="end"`); prompt,
EOS and padding weigh 0. Batches are length-grouped and sharded over data-parallel ranks
by train/batches.py's StepSampler.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from bstar_pl.prm.alignment import encode_steps
from bstar_pl.prm.rows import read_prm
from bstar_pl.prompt import PLAIN, PromptFormat
from bstar_pl.records import PRMExample
from bstar_pl.train.batches import Padded, cut_counts, given_or_read, pad, report_stats, step_loader, tokenizer_of

TrainOn = Literal["all", "end"]


@dataclass(frozen=True)
class PRMEncoded:
    """One tokenised example: per token a label and a loss weight; `*_cut` record a truncation."""

    input_ids: list[int]
    labels: list[float]
    weights: list[float]
    prompt_cut: bool
    target_cut: bool


def encode_prm(
    tokenizer: PreTrainedTokenizerBase,
    example: PRMExample,
    max_prompt_len: int,
    max_target_len: int,
    train_on: TrainOn = "all",
    fmt: PromptFormat = PLAIN,
) -> PRMEncoded | None:
    """Tokenise one example (prompt + response + EOS, as SFT does); None when its steps cannot be aligned with
    its tokens. A long prompt keeps its end, a long response its start (the cut steps' tokens go)."""
    st = encode_steps(tokenizer, example.input, example.output, fmt)
    if st.ends is None:
        return None
    n = len(st.step_of)
    labels = [0.0] * st.prompt_len + [example.label[j] for j in st.step_of] + [0.0]
    if train_on == "all":
        weights = [0.0] * st.prompt_len + [1.0] * n + [0.0]
    else:
        weights = [0.0] * len(st.input_ids)
        for end in st.ends:
            weights[end] = 1.0
    cut_left = max(st.prompt_len - max_prompt_len, 0)
    keep = st.prompt_len + min(n + 1, max_target_len)
    return PRMEncoded(
        st.input_ids[cut_left:keep],
        labels[cut_left:keep],
        weights[cut_left:keep],
        prompt_cut=cut_left > 0,
        target_cut=n + 1 > max_target_len,
    )


def padding(pad_id: int) -> dict[str, tuple[float, torch.dtype]]:
    """How a PRM batch pads: input ids with the tokenizer's padding id; labels and weights with 0 (no loss)."""
    return {"input_ids": (pad_id, torch.long), "labels": (0.0, torch.float32), "weights": (0.0, torch.float32)}


def collate_prm(batch: list[PRMEncoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example: ids with `pad_id`; labels, weights and attention mask with 0."""
    return pad(batch, padding(pad_id))


class PRMDataModule(L.LightningDataModule):
    """PRM batches for `PRMModule`.

    Args:
        train_file: prm-v4 or Math-Shepherd rows (JSON lines or a JSON list).
        tokenizer: tokenizer directory; default: the trained model's `model_path`.
        micro_batch_size: examples per rank per forward pass; the optimizer-step batch is
            `micro_batch_size × data-parallel ranks × trainer.accumulate_grad_batches`.
        max_prompt_len / max_target_len: token limits (prompt cut on the left, response on the right).
        train_on: "all" — every token of a step learns its label (the paper); "end" — only the step's score token.
        soft_labels: accept labels between 0 and 1 (Math-Shepherd's soft estimate); default: 0 or 1 only.
        steps: optimizer steps per epoch; None: one pass over the data.
        shuffle / seed: length-grouped seeded shuffling, as for SFT.
        prompt: the policy's prompt format (as in `SFTDataModule`); scoring must use the same.
    """

    def __init__(
        self,
        train_file: str | None = None,
        soft_labels: bool = False,
        train_on: TrainOn = "all",
        tokenizer: str | None = None,
        micro_batch_size: int = 8,
        max_prompt_len: int = 768,
        max_target_len: int = 768,
        steps: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        prompt: PromptFormat = PLAIN,
    ) -> None:
        super().__init__()
        if train_on not in ("all", "end"):
            raise ValueError(f"train_on must be 'all' or 'end', got {train_on!r}")
        self.save_hyperparameters(ignore=["prompt"])
        self.prompt = prompt
        self.examples: list[PRMExample] | None = None
        self.dataset: Padded | None = None
        self.stats: dict[str, int] = {}

    def set_examples(self, examples: list[PRMExample]) -> None:
        """Train the next fit on `examples` instead of `train_file`."""
        self.examples, self.dataset = examples, None

    def setup(self, stage: str) -> None:
        """Tokenise once; drop (and count) examples whose steps cannot be aligned with their tokens."""
        if self.dataset is not None:
            return
        hp = self.hparams
        examples = given_or_read(self, lambda path: read_prm(path, hp.soft_labels))
        tokenizer, pad_id = tokenizer_of(self, hp.tokenizer)
        limits = (hp.max_prompt_len, hp.max_target_len, hp.train_on, self.prompt)
        encoded = [encode_prm(tokenizer, e, *limits) for e in examples]
        kept = [e for e in encoded if e is not None]
        if not kept:
            raise ValueError("PRM data: no example could be aligned with its tokens")
        self.dataset = Padded(kept, padding(pad_id))
        self.stats = {"examples": len(kept), "unaligned_dropped": len(encoded) - len(kept), **cut_counts(kept)}
        report_stats(self.trainer, "PRM data", self.stats)

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        return step_loader(self.trainer, self.dataset, hp.micro_batch_size, hp.steps, hp.seed, hp.shuffle)
