"""Does a PRM rank within a problem? Best-of-8 by PRM against a random pick, for one PRM training recipe.

.venv/bin/python bench/prm_ranking.py --work /tmp/prm-ranking --problems 2000 --train-on end --lr 1e-4

On the arithmetic task: the PRM pipeline test's policy (900 SFT steps), Math-Shepherd labels from it on
`--problems` training problems, a PRM trained on them, then 8 samples at t = 0.8 on 1,000 dev problems. Prints
pooled AUC (correct vs wrong samples of all problems), the mean AUC within a problem (problems with both),
Best-of-8 and the random pick, and the same for two reference rankers: the policy's own log-likelihood and a
look-up table of each step line's mean label. The policy, labels and samples are cached in `--work`, so variants
of the PRM recipe rerun in minutes. The README's table of variants was measured with this.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # before vLLM is imported: see DESIGN.md §3
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lightning as L
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from bstar_pl import prompt as template
from bstar_pl.metrics.policy import ranking_auc, top_all_correct
from bstar_pl.models.tiny import make_tiny
from bstar_pl.prm.data import PRMDataModule
from bstar_pl.prm.implicit import token_logprobs
from bstar_pl.prm.module import PRMModule
from bstar_pl.prm.rows import read_prm, write_prm
from bstar_pl.prm.scorer import PRMScorer, solution_score
from bstar_pl.prm.shepherd import shepherd_examples
from bstar_pl.records import Sample, Scored
from bstar_pl.tasks import arithmetic as A
from bstar_pl.train.builders import Optim
from bstar_pl.train.data import SFTDataModule
from bstar_pl.train.sft import SFTModule

POOL = A.ArithmeticSpec(min_terms=3, max_terms=4)


def trainer(**kwargs: object) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=1.0,
        **kwargs,
    )


def policy(work: Path) -> Path:
    """The pipeline test's policy: 900 steps on left-to-right references of 2-3 term problems."""
    return sft(work / "sft", work / "base", 900, A.ArithmeticSpec(max_terms=3, random_order=False), 2000)


def arithmetic_base(work: Path, steps: int) -> Path:
    """A PRM backbone that knows more arithmetic than the policy: `steps` SFT steps on 2-4 term problems."""
    spec = A.ArithmeticSpec(max_terms=4, random_order=False)
    return sft(work / f"base_{steps}", work / "base", steps, spec, 6000)


def sft(out: Path, base: Path, steps: int, spec: A.ArithmeticSpec, problems: int) -> Path:
    if not (out / "config.json").is_file():
        L.seed_everything(0)
        module = SFTModule(
            str(make_tiny(base)), optim=Optim(lr=1e-3, lr_min=1e-5, warmup_steps=20), export_dir=str(out)
        )
        # Length-grouped batches, as when the PRM figures in the README were measured.
        data = SFTDataModule(micro_batch_size=32, max_prompt_len=64, max_target_len=96, length_group=64)
        data.set_examples(A.sft_examples(A.generate("train", problems, spec, seed=0)), steps=steps)
        trainer(max_epochs=-1, max_steps=steps).fit(module, datamodule=data)
    return out


def labels_and_samples(work: Path, problems: int, solutions: int, completions: int) -> tuple[Path, list[dict]]:
    """Math-Shepherd labels for `problems` training problems and 8 samples per dev problem, cached in `work`."""
    labels, held = work / f"labels_{problems}_{solutions}_{completions}.jsonl", work / "held_out.json"
    if not labels.is_file() or not held.is_file():
        from bstar_pl.engine import Engine
        from bstar_pl.settings import EngineSettings

        sampler = Engine(policy(work), EngineSettings(dtype="float32", max_model_len=256, max_new_tokens=64), seed=0)
        if not labels.is_file():
            train = A.generate("train", problems, POOL, seed=1)
            write_prm(labels, shepherd_examples(sampler, train, A.is_correct, solutions, completions, progress=False))
        if not held.is_file():
            dev = {p.id: p for p in A.generate("dev", 1000, POOL, seed=0)}
            samples = sampler.generate(list(dev.values()), [0.8], 8, progress=False)
            rows = [
                {"id": s.problem_id, "question": dev[s.problem_id].question, "text": s.text}
                | {"correct": A.is_correct(s.text, dev[s.problem_id])}
                for s in samples
            ]
            held.write_text(json.dumps(rows))
    return labels, json.loads(held.read_text())


def train_prm(work: Path, labels: Path, args: argparse.Namespace, hide: str | None) -> Path:
    out = work / f"prm_{args.tag}"
    examples = read_prm(labels)
    if hide:
        examples = [dataclasses.replace(e, input=hide) for e in examples]
    L.seed_everything(args.seed)
    backbone = arithmetic_base(work, args.base_steps) if args.base_steps else policy(work)
    module = PRMModule(
        str(backbone),
        optim=Optim(lr=args.lr, lr_min=args.lr / 100, warmup_steps=5),
        export_dir=str(out),
        reward=args.reward,
        beta=args.beta,
        lm_weight=args.lm_weight,
    )
    if args.freeze_backbone:
        module.configure_model()
        module.model.backbone.requires_grad_(False)  # the optimizer takes only parameters that need gradients
    data = PRMDataModule(
        micro_batch_size=32, max_prompt_len=64, max_target_len=96, train_on=args.train_on, seed=args.seed
    )
    data.set_examples(examples)
    trainer(max_epochs=args.epochs).fit(module, datamodule=data)
    return out


def likelihood(path: Path, held: Sequence[dict]) -> list[float]:
    """A causal LM's log-probability of each response (with its EOS) after its plain-text prompt."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    values = []
    with torch.no_grad():
        for h in held:
            prompt = tokenizer(template.prompt(h["question"]))["input_ids"]
            ids = tokenizer(template.prompt(h["question"]) + h["text"])["input_ids"] + [tokenizer.eos_token_id]
            values.append(token_logprobs(model, torch.tensor([ids]), None)[0, len(prompt) :].sum().item())
    return values


def lookup(labels: Path, held: Sequence[dict]) -> list[float]:
    """Min over a response's step lines of that line's mean label in the training labels (smoothed)."""
    stats: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for e in read_prm(labels):
        for step, label in zip(e.output, e.label):
            line = stats[step.split("\n")[0]]
            line[0], line[1] = line[0] + label, line[1] + 1
    values = []
    for h in held:
        lines = [line.strip() for line in h["text"].split("\n") if "=" in line]
        means = [(stats[x][0] + 0.5) / (stats[x][1] + 1) for x in lines] or [0.5]  # an unseen line: 0.5
        values.append(min(means))
    return values


def auc(positive: Sequence[float], negative: Sequence[float]) -> float:
    return sum((p > n) + 0.5 * (p == n) for p in positive for n in negative) / (len(positive) * len(negative))


def ranking(held: Sequence[dict], values: Sequence[float | None]) -> dict[str, float]:
    """Pooled AUC, and as `bstar-pl evaluate` computes them: the mean within-problem AUC, Best-of-K (ties
    averaged) and a random pick's accuracy. A None value (an unaligned response) ranks last."""
    groups: dict[str, list[Scored]] = defaultdict(list)
    for i, (h, v) in enumerate(zip(held, values)):
        sample = Sample(h["id"], 0.8, i, h["text"], 0, "stop")
        groups[h["id"]].append(Scored(sample, h["correct"], h["correct"] + (v or 0.0), aligned=v is not None))
    ranked = [(h["correct"], -math.inf if v is None else v) for h, v in zip(held, values)]
    within = [a for a in map(ranking_auc, groups.values()) if a is not None]
    return {
        "pooled_auc": auc([v for c, v in ranked if c], [v for c, v in ranked if not c]),
        "within_auc": sum(within) / len(within),
        "mixed_problems": len(within),
        "best_of_k": sum(top_all_correct(g, 1) for g in groups.values()) / len(groups),
        "random_pick": sum(sum(x.correct for x in g) / len(g) for g in groups.values()) / len(groups),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="cache of policy, labels, samples and PRMs")
    parser.add_argument("--problems", type=int, default=200, help="labelled training problems")
    parser.add_argument("--solutions", type=int, default=8)
    parser.add_argument("--completions", type=int, default=4)
    parser.add_argument("--train-on", default="all", choices=("all", "end"))
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--reward", default="head", choices=("head", "implicit"))
    parser.add_argument("--beta", type=float, default=0.05, help="the implicit PRM's scale")
    parser.add_argument("--lm-weight", type=float, default=0.0, help="next-token loss on correct steps")
    parser.add_argument("--base-steps", type=int, default=0, help="start from a 2-4 term SFT model (0: the policy)")
    parser.add_argument("--freeze-backbone", action="store_true", help="train the head only")
    parser.add_argument("--hide-question", action="store_true", help="one fixed question for every example")
    parser.add_argument("--references", action="store_true", help="also rank by likelihood and a look-up table")
    parser.add_argument("--seed", type=int, default=0, help="PRM initialisation and data order")
    parser.add_argument("--tag", default="prm", help="name of this PRM in --work")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    labels, held = labels_and_samples(args.work, args.problems, args.solutions, args.completions)
    hide = "What is it?" if args.hide_question else None
    prm = train_prm(args.work, labels, args, hide)
    scores = PRMScorer(prm).score([hide or h["question"] for h in held], [h["text"] for h in held], False)
    rankers = {"prm (min step score)": [solution_score(s.scores) if s.aligned else None for s in scores]}
    if args.references:
        rankers["policy log-likelihood"] = likelihood(policy(args.work), held)
        rankers["step-line look-up"] = lookup(labels, held)
        if args.base_steps:
            rankers["PRM base log-likelihood"] = likelihood(arithmetic_base(args.work, args.base_steps), held)
    for name, values in rankers.items():
        r = ranking(held, values)
        print(
            f"{name}: pooled AUC {r['pooled_auc']:.3f}, within-problem AUC {r['within_auc']:.3f} "
            f"({r['mixed_problems']} problems), Best-of-8 {r['best_of_k']:.3f}, random pick {r['random_pick']:.3f}"
        )


if __name__ == "__main__":
    main()
