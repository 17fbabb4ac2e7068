"""SFTModule on the tiny model: masked loss, learning arithmetic, exact continuation, freezing, bf16, export."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from safetensors.torch import load_file
from torch.distributed.tensor import DTensor
from transformers import AutoModelForCausalLM, AutoTokenizer

from bstar_pl.cli import main
from bstar_pl.export import save_hf, weight_buckets
from bstar_pl.prompt import prompt_ids
from bstar_pl.records import SFTExample
from bstar_pl.tasks import arithmetic
from bstar_pl.train.builders import Optim, WarmupCosine
from bstar_pl.train.data import IGNORE, SFTDataModule, collate, encode
from bstar_pl.train.sft import SFTModule, fit_steps, token_loss

SPEC = arithmetic.ArithmeticSpec(max_terms=3)


class Record(L.Callback):
    """What each optimizer step saw: its LR and a fingerprint of its batch."""

    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.batches: list[list[int]] = []

    def on_train_batch_start(self, trainer: L.Trainer, module: SFTModule, batch: dict, batch_idx: int) -> None:
        self.lrs.append(module.scheduler.get_last_lr()[0])
        self.batches.append(batch["input_ids"].sum(1).tolist())


def greedy_accuracy(model: torch.nn.Module, tokenizer: AutoTokenizer, problems: list[arithmetic.Problem]) -> float:
    """Greedy decoding with transformers, left-padded; the model goes back to train mode after."""
    ids = [prompt_ids(tokenizer, p.question) for p in problems]
    width = max(map(len, ids))
    x = torch.tensor([[tokenizer.pad_token_id] * (width - len(i)) + i for i in ids])
    model.eval()
    with torch.no_grad():
        out = model.generate(
            input_ids=x,
            attention_mask=(x != tokenizer.pad_token_id).long(),
            max_new_tokens=48,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    model.train()
    texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    return sum(arithmetic.is_correct(t, p) for t, p in zip(texts, problems)) / len(problems)


def test_masked_positions_never_reach_the_loss(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = [SFTExample("What is 2 + 3?", "2 + 3 = 5\n\n# Answer\n\n5"), SFTExample("What is 1 - 1?", "0")]
    batch = collate([encode(tokenizer, e, 64, 64) for e in examples], tokenizer.pad_token_id)
    assert (batch["labels"][1] == IGNORE).sum() > (batch["labels"][0] == IGNORE).sum()  # row 1 is padded
    logits = torch.randn(*batch["input_ids"].shape, len(tokenizer), requires_grad=True)
    token_loss(logits, batch["labels"]).backward()
    # Logits at t predict token t+1: they matter exactly where label t+1 is a target token.
    counts = torch.zeros_like(batch["labels"], dtype=torch.bool)
    counts[:, :-1] = batch["labels"][:, 1:] != IGNORE
    assert (logits.grad.abs().sum(-1) > 0).equal(counts)

    module = SFTModule(str(tiny_model_dir))
    module.configure_model()
    module.model.eval()
    loss = token_loss(module.model(batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"])
    changed = batch["input_ids"].clone()
    changed[batch["attention_mask"] == 0] = 7  # garbage where the padding was
    loss2 = token_loss(module.model(changed, attention_mask=batch["attention_mask"]).logits, batch["labels"])
    assert torch.isfinite(loss) and loss == loss2


@pytest.mark.fit
def test_two_fits_continue_one_uninterrupted_run(tiny_model_dir: Path, cpu_trainer: Callable) -> None:
    """k steps on data A then k on data B = one 2k-step run over A then B: LR, batches, optimizer, weights."""
    k, micro = 4, 4
    data_a = arithmetic.sft_examples(arithmetic.generate("train", k * micro, SPEC, seed=0))
    data_b = arithmetic.sft_examples(arithmetic.generate("train", k * micro, SPEC, seed=1))
    hp = {"model_path": str(tiny_model_dir), "optim": Optim(lr=1e-3, lr_min=1e-5, warmup_steps=3, total_steps=2 * k)}

    L.seed_everything(0)
    split, rec_split = SFTModule(**hp), Record()
    tr = cpu_trainer(0, [rec_split])
    data = SFTDataModule(micro_batch_size=micro, shuffle=False, max_prompt_len=64, max_target_len=64)
    fit_steps(tr, split, data, data_a, k)
    fit_steps(tr, split, data, data_b, k)

    L.seed_everything(0)
    whole, rec_whole = SFTModule(**hp), Record()
    data = SFTDataModule(micro_batch_size=micro, shuffle=False, max_prompt_len=64, max_target_len=64)
    fit_steps(cpu_trainer(0, [rec_whole]), whole, data, data_a + data_b, 2 * k)

    schedule = WarmupCosine(3, 2 * k, 1e-2)
    assert rec_split.lrs == pytest.approx([1e-3 * schedule(s) for s in range(2 * k)])
    assert rec_split.lrs == rec_whole.lrs and rec_split.batches == rec_whole.batches
    assert tr.global_step == 2 * k
    assert all(s["step"] == 2 * k for s in split.optimizer.state.values())  # one optimizer, never reset
    for (name, a), b in zip(split.model.state_dict().items(), whole.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    assert not torch.equal(start["model.layers.0.mlp.up_proj.weight"], split.model.model.layers[0].mlp.up_proj.weight)


@pytest.mark.fit
def test_a_new_process_resumes_from_a_checkpoint_like_the_same_process(
    tiny_model_dir: Path, tmp_path: Path, cpu_trainer: Callable
) -> None:
    """The driver's resume path: new module and trainer + ckpt_path continue as the old ones would."""
    k, micro = 3, 4
    data_a = arithmetic.sft_examples(arithmetic.generate("train", 40, SPEC, seed=0))
    data_b = arithmetic.sft_examples(arithmetic.generate("train", 40, SPEC, seed=1))
    hp = {"model_path": str(tiny_model_dir), "optim": Optim(lr=1e-3, warmup_steps=2, total_steps=4 * k)}
    runs = []
    for resume in (False, True):
        L.seed_everything(0)
        module, record = SFTModule(**hp), Record()
        tr = cpu_trainer(0, [record])
        data = SFTDataModule(micro_batch_size=micro, max_prompt_len=64, max_target_len=64)
        fit_steps(tr, module, data, data_a, k)
        if resume:
            tr.save_checkpoint(tmp_path / "iter0.ckpt")
            module, tr = SFTModule(**hp), cpu_trainer(0, [record])
            data = SFTDataModule(micro_batch_size=micro, max_prompt_len=64, max_target_len=64)
        fit_steps(tr, module, data, data_b, k, ckpt_path=tmp_path / "iter0.ckpt" if resume else None)
        assert tr.global_step == 2 * k and module.scheduler.last_epoch == 2 * k
        runs.append((record, module.model.state_dict()))
    (rec_a, weights_a), (rec_b, weights_b) = runs
    assert rec_a.lrs == rec_b.lrs and rec_a.batches == rec_b.batches
    for name, tensor in weights_a.items():
        torch.testing.assert_close(weights_b[name], tensor, rtol=0, atol=0, msg=name)


def two_steps(cpu_trainer: Callable, tiny_model_dir: Path, **options: bool | int) -> SFTModule:
    module = SFTModule(str(tiny_model_dir), optim=Optim(lr=1e-3, total_steps=2), **options)
    data = SFTDataModule(micro_batch_size=4, shuffle=False, max_prompt_len=64, max_target_len=64)
    fit_steps(cpu_trainer(0), module, data, arithmetic.sft_examples(arithmetic.generate("train", 8, SPEC)), 2)
    return module


@pytest.mark.fit
def test_frozen_parts_stay_put_and_the_rest_trains(tiny_model_dir: Path, cpu_trainer: Callable) -> None:
    module = two_steps(cpu_trainer, tiny_model_dir, freeze_embeddings=True, freeze_norms=True, freeze_lm_head=True)
    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    for name, tensor in module.model.state_dict().items():
        frozen = "embed_tokens" in name or "norm" in name or "lm_head" in name
        assert torch.equal(tensor, start[name]) == frozen, name


@pytest.mark.fit
def test_freeze_layers_keeps_the_embeddings_and_the_lowest_layers_fixed(
    tiny_model_dir: Path, cpu_trainer: Callable
) -> None:
    module = two_steps(cpu_trainer, tiny_model_dir, freeze_layers=1)
    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    assert module.model.config.num_hidden_layers > 1
    for name, tensor in module.model.state_dict().items():
        frozen = "embed_tokens" in name or "layers.0." in name
        assert torch.equal(tensor, start[name]) == frozen, name
    with pytest.raises(ValueError, match="freeze_layers is 99"):
        two_steps(cpu_trainer, tiny_model_dir, freeze_layers=99)


@pytest.mark.fit
def test_activation_checkpointing_changes_memory_not_results(tiny_model_dir: Path, cpu_trainer: Callable) -> None:
    plain, recomputed = (
        two_steps(cpu_trainer, tiny_model_dir),
        two_steps(cpu_trainer, tiny_model_dir, activation_checkpointing=True),
    )
    assert recomputed.model.is_gradient_checkpointing and not plain.model.is_gradient_checkpointing
    for (name, a), b in zip(plain.model.state_dict().items(), recomputed.model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


@pytest.mark.fit
def test_bf16_compute_keeps_fp32_master_weights_under_fsdp2(
    tiny_model_dir: Path, cpu_trainer: Callable, losses: Callable
) -> None:
    """param_dtype="bfloat16" (the GPU setting) through FSDP2's MixedPrecisionPolicy, one gloo rank."""
    examples = arithmetic.sft_examples(arithmetic.generate("train", 16, SPEC))
    found = {}
    try:
        for dtype in ("float32", "bfloat16"):
            L.seed_everything(0)
            module, record = (
                SFTModule(str(tiny_model_dir), optim=Optim(lr=1e-3, total_steps=2), param_dtype=dtype),
                losses(),
            )
            tr = cpu_trainer(0, [record], strategy=ModelParallelStrategy(1, 1, process_group_backend="gloo"))
            data = SFTDataModule(micro_batch_size=4, shuffle=False, max_prompt_len=64, max_target_len=64)
            fit_steps(tr, module, data, examples, 2)
            found[dtype] = record.losses
            assert all(isinstance(p, DTensor) and p.dtype == torch.float32 for p in module.model.parameters())
        assert [t.dtype for b in weight_buckets(module.model) for _, t in b] == [torch.bfloat16] * 39
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    assert found["float32"] != found["bfloat16"]
    assert found["bfloat16"] == pytest.approx(found["float32"], rel=0.02)


def test_export_writes_a_loadable_checkpoint_and_buckets(tiny_model_dir: Path, tmp_path: Path) -> None:
    module = SFTModule(str(tiny_model_dir))
    module.configure_model()
    out = save_hf(module.model, tiny_model_dir, tmp_path / "policy")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind
    saved = load_file(out / "model.safetensors")
    buckets = list(weight_buckets(module.model, torch.bfloat16, bucket_bytes=1 << 20))
    assert len(buckets) > 1 and all(t.dtype == torch.bfloat16 for b in buckets for _, t in b)
    streamed = dict(kv for b in buckets for kv in b)
    assert set(streamed) >= set(saved)
    for name, tensor in saved.items():
        torch.testing.assert_close(streamed[name], tensor.to(torch.bfloat16), rtol=0, atol=0)
    half = save_hf(module.model, tiny_model_dir, tmp_path / "policy_bf16", torch.bfloat16)
    assert AutoModelForCausalLM.from_pretrained(half, dtype="auto").dtype == torch.bfloat16
    assert load_file(half / "model.safetensors").keys() == saved.keys()
    assert next(module.model.parameters()).dtype == torch.float32  # only the copy was cast


@pytest.mark.fit
@pytest.mark.slow
def test_sft_learns_arithmetic(tiny_model_dir: Path, cpu_trainer: Callable, losses: Callable) -> None:
    """150 steps at batch 32 on one-digit sums: loss falls, greedy test accuracy rises from 0."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    test = arithmetic.generate("test", 200, SPEC, seed=0)
    train = arithmetic.sft_examples(arithmetic.generate("train", 2000, SPEC, seed=0))
    L.seed_everything(0)
    module, steps = (
        SFTModule(str(tiny_model_dir), optim=Optim(lr=3e-3, lr_min=3e-5, warmup_steps=10, total_steps=150)),
        150,
    )
    module.configure_model()
    before = greedy_accuracy(module.model, tokenizer, test)
    data = SFTDataModule(micro_batch_size=32, max_prompt_len=64, max_target_len=96)
    record = losses()
    fit_steps(cpu_trainer(0, [record]), module, data, train, steps)
    losses = record.losses
    after = greedy_accuracy(module.model, tokenizer, test)
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    print(f"loss {first:.3f} -> {last:.3f}; greedy test accuracy {before:.3f} -> {after:.3f}")
    assert last < first / 3
    assert before == 0.0 and after >= 0.05
    assert module.model.training


@pytest.mark.fit
def test_sft_fit_on_a_malformed_file_ends_in_one_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"query": "q", "output": "o"}\n{"query": "q", "outptu": "o"}\n')
    config = Path(__file__).resolve().parents[1] / "configs" / "sft" / "tiny.yaml"
    args = [f"--config={config}", f"--model.model_path={tiny_model_dir}", f"--data.train_file={tmp_path / 'bad.jsonl'}"]
    with pytest.raises(SystemExit) as exit_:
        main(["sft", "fit", *args, f"--trainer.logger.save_dir={tmp_path}", "--trainer.enable_progress_bar=false"])
    assert str(exit_.value) == f"error: {tmp_path / 'bad.jsonl'}:2: missing field 'output'"
