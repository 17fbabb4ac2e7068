"""PRMModule on the tiny model: it trains (backbone and head), fits labels, exports a PRM the scorer reads, FSDP2."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch.distributed.tensor import DTensor
from transformers import AutoModelForCausalLM, AutoTokenizer

from bstar_pl.cli import main
from bstar_pl.models.tiny import Shape, make_tiny
from bstar_pl.prm.alignment import SEP, prm_steps
from bstar_pl.prm.data import PRMDataModule, collate_prm, encode_prm
from bstar_pl.prm.model import REFERENCE_DIR, is_prm_dir, load_reward_model
from bstar_pl.prm.module import PRMModule, next_token_loss
from bstar_pl.prm.rows import write_prm
from bstar_pl.prm.scorer import PRMScorer
from bstar_pl.records import PRMExample
from bstar_pl.tasks import arithmetic
from bstar_pl.train.builders import Optim

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")
PROBLEMS = arithmetic.generate("train", 16, arithmetic.ArithmeticSpec(min_terms=3, max_terms=3), seed=3)


def examples() -> list[PRMExample]:
    """Each reference solution (every step good), and one with nonsense steps (every step bad)."""
    out = []
    for p in PROBLEMS:
        steps = prm_steps(p.solution)
        out.append(PRMExample(input=p.question, output=steps, label=[1.0] * len(steps)))
        out.append(PRMExample(input=p.question, output=["? = ?", "? = ?\n\n# Answer\n\n?"], label=[0.0, 0.0]))
    return out


def data(train_on: str = "all") -> PRMDataModule:
    # File order mixes good and bad examples in every batch (grouping by length would not: they differ in length).
    module = PRMDataModule(micro_batch_size=8, max_prompt_len=64, max_target_len=64, train_on=train_on, shuffle=False)
    module.set_examples(examples())
    return module


@pytest.mark.fit
def test_fit_trains_backbone_and_head_and_exports_a_prm(
    tiny_model_dir: Path, tmp_path: Path, cpu_trainer: Callable, losses: Callable
) -> None:
    L.seed_everything(0)
    module, recorder = (
        PRMModule(str(tiny_model_dir), optim=Optim(lr=1e-3, lr_min=1e-5), export_dir=str(tmp_path / "prm")),
        losses(),
    )
    module.configure_model()
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    cpu_trainer(3, [recorder]).fit(module, datamodule=data())
    assert len(recorder.losses) == 3 and all(torch.isfinite(torch.tensor(recorder.losses)))
    after = module.model.state_dict()
    assert not torch.equal(before["head.weight"], after["head.weight"])
    assert not torch.equal(
        before["backbone.layers.0.mlp.up_proj.weight"], after["backbone.layers.0.mlp.up_proj.weight"]
    )
    # The export is one directory that the scorer reads, giving the trained model's own step scores.
    assert is_prm_dir(tmp_path / "prm")
    example = examples()[1]
    scorer = PRMScorer(tmp_path / "prm")
    (scores,) = scorer.score([example.input], [SEP.join(example.output)], progress=False)
    st = scorer.encode(example.input, SEP.join(example.output))
    module.model.eval()
    with torch.no_grad():
        expected = module.model(torch.tensor([st.input_ids]))[0, st.ends].clamp(-5, 5).tolist()
    assert scores.scores == pytest.approx(expected, abs=1e-5)
    # A PRM directory is also a valid starting point: the head comes back as trained.
    reloaded = load_reward_model(tmp_path / "prm")
    assert torch.equal(reloaded.head.weight, after["head.weight"])


@pytest.mark.fit
@pytest.mark.parametrize(("train_on", "reward"), [("all", "head"), ("end", "head"), ("end", "implicit")])
def test_labels_are_learned(
    tiny_model_dir: Path, train_on: str, reward: str, cpu_trainer: Callable, losses: Callable
) -> None:
    """Thirty steps on 32 examples whose labels a token tells: the weighted BCE falls well below its start."""
    L.seed_everything(0)
    module = PRMModule(str(tiny_model_dir), optim=Optim(lr=1e-3, lr_min=1e-4, warmup_steps=3), reward=reward, beta=0.5)
    recorder = losses()
    cpu_trainer(30, [recorder]).fit(module, datamodule=data(train_on))
    first, last = sum(recorder.losses[:4]) / 4, sum(recorder.losses[-4:]) / 4
    assert last < 0.6 * first, recorder.losses


def test_next_token_loss_counts_tokens_of_correct_steps_only() -> None:
    vocab = torch.randn(1, 4, 5)
    ids, labels = torch.tensor([[0, 1, 2, 3]]), torch.tensor([[0.0, 1.0, 0.0, 0.5]])
    # Token 1 (label 1) and token 3 (label 0.5) count, predicted from positions 0 and 2; token 2 (label 0) not.
    ce = torch.nn.functional.cross_entropy(vocab[0, [0, 2]], torch.tensor([1, 3]), reduction="none")
    assert next_token_loss(vocab, ids, labels).item() == pytest.approx(((ce[0] + 0.5 * ce[1]) / 1.5).item())
    changed = vocab.clone()
    changed[0, 1] += 10 * torch.randn(5)  # the prediction of token 2, a wrong step's token
    assert next_token_loss(changed, ids, labels).item() == pytest.approx(next_token_loss(vocab, ids, labels).item())


@pytest.mark.fit
def test_lm_weight_keeps_the_backbone_predicting_and_exports_no_lm_head(
    tiny_model_dir: Path, tmp_path: Path, cpu_trainer: Callable, losses: Callable
) -> None:
    """With lm_weight the frozen LM head stays as loaded, the backbone keeps predicting correct steps better than
    without it, and the exported PRM is the usual directory (no LM head)."""
    reference = load_reward_model(tiny_model_dir, lm_head=True)
    assert not any(p.requires_grad for p in reference.lm_head.parameters())
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    batch = collate_prm([encode_prm(tokenizer, e, 64, 64) for e in examples()[::2]], tokenizer.eos_token_id)

    def lm_loss(model: torch.nn.Module) -> float:
        """The next-token loss of the reference solutions through the model's LM head."""
        with torch.no_grad():
            _, vocab = model(batch["input_ids"], batch["attention_mask"], next_token_logits=True)
            return next_token_loss(vocab, batch["input_ids"], batch["labels"]).item()

    fitted = {}
    for weight in (0.0, 1.0):
        L.seed_everything(0)
        module = PRMModule(
            str(tiny_model_dir), optim=Optim(lr=1e-3), export_dir=str(tmp_path / f"prm{weight}"), lm_weight=weight
        )
        cpu_trainer(20, [losses()]).fit(module, datamodule=data())
        fitted[weight] = module
    lm_head = fitted[1.0].model.lm_head
    assert torch.equal(lm_head.weight, reference.lm_head.weight)
    on_top = load_reward_model(tiny_model_dir, lm_head=True)
    on_top.backbone, on_top.head = fitted[0.0].model.backbone, fitted[0.0].model.head
    without, with_ = lm_loss(on_top), lm_loss(fitted[1.0].model)
    assert with_ < without, (with_, without)
    assert is_prm_dir(tmp_path / "prm1.0") and load_reward_model(tmp_path / "prm1.0").lm_head is None
    with pytest.raises(ValueError, match="lm_head needs a causal LM directory"):
        load_reward_model(tmp_path / "prm1.0", lm_head=True)


def test_lm_head_of_tied_embeddings_is_a_frozen_copy(tmp_path: Path) -> None:
    """Freezing a tied LM head must not freeze the input embeddings it shares its weight with."""
    model = load_reward_model(make_tiny(tmp_path / "tied", shape=Shape(tied=True)), lm_head=True)
    embeddings = model.backbone.get_input_embeddings().weight
    assert torch.equal(model.lm_head.weight, embeddings)
    assert embeddings.requires_grad and not model.lm_head.weight.requires_grad
    assert model.lm_head.weight.data_ptr() != embeddings.data_ptr()


@pytest.mark.fit
@pytest.mark.parametrize(("reward", "lm_weight"), [("head", 0.0), ("head", 0.5), ("implicit", 0.0)])
def test_fsdp2_on_cpu_shards_and_exports(
    tiny_model_dir: Path, tmp_path: Path, reward: str, lm_weight: float, cpu_trainer: Callable, losses: Callable
) -> None:
    L.seed_everything(0)
    module = PRMModule(
        str(tiny_model_dir), optim=Optim(lr=1e-3), export_dir=str(tmp_path / "prm"), reward=reward, lm_weight=lm_weight
    )
    recorder = losses()
    strategy = ModelParallelStrategy(1, 1, process_group_backend="gloo")
    cpu_trainer(2, [recorder], strategy=strategy).fit(module, datamodule=data())
    assert all(isinstance(p, DTensor) for p in module.model.parameters())
    assert all(torch.isfinite(torch.tensor(recorder.losses)))
    assert (
        PRMScorer(tmp_path / "prm").score(["What is 1 + 2?"], ["1 + 2 = 3\n\n# Answer\n\n3"], progress=False)[0].aligned
    )
    if reward == "implicit":  # the reference gathers unchanged, the backbone trained
        start = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
        reference = AutoModelForCausalLM.from_pretrained(tmp_path / "prm" / REFERENCE_DIR).state_dict()
        trained = AutoModelForCausalLM.from_pretrained(tmp_path / "prm").state_dict()
        assert all(torch.equal(start[k], reference[k]) for k in start)
        key = "model.layers.0.mlp.up_proj.weight"
        assert not torch.equal(start[key], trained[key])


@pytest.mark.fit
def test_prm_fit_through_the_cli(tiny_model_dir: Path, tmp_path: Path) -> None:
    train = tmp_path / "prm.jsonl"
    write_prm(train, examples())
    main(
        [
            "prm",
            "fit",
            f"--model.model_path={tiny_model_dir}",
            f"--model.export_dir={tmp_path / 'out'}",
            f"--data.train_file={train}",
            "--data.micro_batch_size=8",
            "--trainer.accelerator=cpu",
            "--trainer.max_steps=2",
            "--trainer.logger=false",
            "--trainer.enable_checkpointing=false",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    assert is_prm_dir(tmp_path / "out")
