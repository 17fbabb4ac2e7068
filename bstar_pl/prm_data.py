"""PRM data: prm-v4 or Math-Shepherd rows -> token batches with a label and a loss weight per token.

Every token of a step carries that step's label (or only the step's score token does, `train_on="end"`); prompt,
EOS and padding weigh 0. Batches are length-grouped and sharded over data-parallel ranks by data.py's StepSampler.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any, Literal

import lightning as L
import torch
from torch.utils.data import DataLoader
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from bstar_pl.atomic import atomic_path
from bstar_pl.data import report_stats, step_loader
from bstar_pl.records import PRMExample, RecordError, from_dict
from bstar_pl.steps import encode_steps
from bstar_pl.tasks.loading import read_rows
from bstar_pl.template import PLAIN, PromptFormat

TAG = "ки"  # Math-Shepherd's step tag in `input`; `label` holds "+" or "-" in its place
FIRST_STEP = re.compile(r"[Ss]tep 1:")
TrainOn = Literal["all", "end"]


def read_prm(path: str | os.PathLike[str], soft_labels: bool = False) -> list[PRMExample]:
    """PRM examples from a JSON-lines file (or a `.json` list) of prm-v4 rows `{input, output: [steps], label}` or
    Math-Shepherd rows `{input, label, task}`, told apart row by row. Labels must be 0 or 1 unless `soft_labels`
    (then any number in [0, 1]); a malformed row fails with `path:line: what is wrong`."""
    examples = []
    for row in read_rows(path):
        where, row = row.where, row.data
        try:
            if isinstance(row, dict) and isinstance(row.get("label"), str):
                example = from_shepherd(row)
            else:
                example = from_dict(PRMExample, row, ignore_unknown=True)
            bad = [i for i, v in enumerate(example.label) if v not in (0, 1)]
            if bad and not soft_labels:
                raise ValueError(
                    f"field 'label[{bad[0]}]': expected 0 or 1, got {example.label[bad[0]]} (soft labels need "
                    "soft_labels=True)"
                )
        except (TypeError, ValueError) as e:
            raise RecordError(f"{where}: {e}") from None
        examples.append(example)
    return examples


def write_prm(path: str | os.PathLike[str], examples: list[PRMExample]) -> int:
    """Write prm-v4 rows atomically; labels that are 0 or 1 are written as integers, as the reference reads them."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for e in examples:
            label = [int(v) if v in (0, 1) else v for v in e.label]
            f.write(json.dumps({"input": e.input, "output": e.output, "label": label}, ensure_ascii=False) + "\n")
    return len(examples)


def from_shepherd(row: dict[str, Any]) -> PRMExample:
    """A Math-Shepherd row as a prm-v4 example: `input` is the question, then steps each ending in " ки";
    `label` is the same text with "+" (the step can still reach the answer) or "-" in place of each tag.
    The question is what precedes "Step 1:"; steps keep their text ("Step k: ...") as it is, stripped."""
    text, tagged = row.get("input"), row["label"]
    if not isinstance(text, str):
        raise ValueError("field 'input': expected str")
    parts = text.split(TAG)
    if len(parts) < 2:
        raise ValueError(f"field 'input': no step tag {TAG!r}")
    labels, pos = [], len(parts[0])
    if tagged[:pos] != parts[0]:
        raise ValueError("fields 'input' and 'label' differ before the first step tag")
    for k, part in enumerate(parts[1:], start=1):
        mark = tagged[pos : pos + 1]
        if mark not in ("+", "-"):
            raise ValueError(f"field 'label': expected '+' or '-' at step tag {k}, got {mark!r}")
        labels.append(1.0 if mark == "+" else 0.0)
        if tagged[pos + 1 : pos + 1 + len(part)] != part:
            raise ValueError(f"fields 'input' and 'label' differ after step tag {k}")
        pos += 1 + len(part)
    if pos != len(tagged) or parts[-1].strip():
        raise ValueError("text after the last step tag")
    first = FIRST_STEP.search(parts[0])
    if first is None:
        raise ValueError("field 'input': no 'Step 1:' before the first step tag")
    steps = [s.strip() for s in [parts[0][first.start() :], *parts[1:-1]]]
    if not all(steps):
        raise ValueError("field 'input': an empty step")
    return PRMExample(input=parts[0][: first.start()].strip(), output=steps, label=labels)


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


def collate_prm(batch: list[PRMEncoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example: ids with `pad_id`; labels, weights and attention mask with 0."""
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.zeros((len(batch), width))
    weights = torch.zeros((len(batch), width))
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, e in enumerate(batch):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        weights[row, :n] = torch.tensor(e.weights)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "weights": weights}


class PRMTokenised(torch.utils.data.Dataset):
    """Encoded examples; indexing with a list of indices returns one padded batch."""

    def __init__(self, encoded: list[PRMEncoded], pad_id: int) -> None:
        self.encoded, self.pad_id = encoded, pad_id

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        return collate_prm([self.encoded[i] for i in indices], self.pad_id)


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
        tokenizer: str | None = None,
        micro_batch_size: int = 8,
        max_prompt_len: int = 768,
        max_target_len: int = 768,
        train_on: TrainOn = "all",
        soft_labels: bool = False,
        steps: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        prompt: PromptFormat = PLAIN,
    ) -> None:
        super().__init__()
        self.prompt = prompt
        if train_on not in ("all", "end"):
            raise ValueError(f"train_on must be 'all' or 'end', got {train_on!r}")
        self.train_file, self.tokenizer_path = train_file, tokenizer
        self.micro_batch_size, self.max_prompt_len, self.max_target_len = (
            micro_batch_size,
            max_prompt_len,
            max_target_len,
        )
        self.train_on, self.soft_labels = train_on, soft_labels
        self.steps, self.shuffle, self.seed = steps, shuffle, seed
        self.examples: list[PRMExample] | None = None
        self.dataset: PRMTokenised | None = None
        self.stats: dict[str, int] = {}

    def set_examples(self, examples: list[PRMExample]) -> None:
        """Train the next fit on `examples` instead of `train_file`."""
        self.examples, self.dataset = examples, None

    def setup(self, stage: str) -> None:
        """Tokenise once; drop (and count) examples whose steps cannot be aligned with their tokens."""
        if self.dataset is not None:
            return
        if self.examples is None:
            if self.train_file is None:
                raise ValueError("PRMDataModule: give train_file or call set_examples()")
            self.examples = read_prm(self.train_file, self.soft_labels)
        path = self.tokenizer_path or self.trainer.lightning_module.hparams.model_path
        tokenizer = AutoTokenizer.from_pretrained(path)
        encoded = [
            encode_prm(tokenizer, e, self.max_prompt_len, self.max_target_len, self.train_on, self.prompt)
            for e in self.examples
        ]
        kept = [e for e in encoded if e is not None]
        if not kept:
            raise ValueError("PRM data: no example could be aligned with its tokens")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.dataset = PRMTokenised(kept, pad)
        self.stats = {
            "examples": len(kept),
            "unaligned_dropped": len(encoded) - len(kept),
            "prompts_truncated": sum(e.prompt_cut for e in kept),
            "targets_truncated": sum(e.target_cut for e in kept),
        }
        report_stats(self.trainer, "PRM data", self.stats)

    def train_dataloader(self) -> DataLoader:
        return step_loader(self.trainer, self.dataset, self.micro_batch_size, self.steps, self.seed, self.shuffle)
