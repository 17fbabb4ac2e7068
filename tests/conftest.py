"""Shared fixtures: the tiny offline model, built once per session, and a quiet, single-threaded CPU."""

from __future__ import annotations

import os

# Before torch or vLLM is imported: see DESIGN.md §3 (2-core machine, no hub).
for _key, _value in {
    "OMP_NUM_THREADS": "1",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_key, _value)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from bstar_pl.tiny import make_tiny  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def no_rendezvous_from_earlier_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    """An in-process engine or trainer leaves MASTER_PORT etc. in os.environ while still listening on
    that port; a torchrun or Lightning child inheriting them fails with EADDRINUSE. Start clean."""
    for key in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny Llama (hidden 128, 4 layers) with a sentencepiece tokenizer, in HF format."""
    return make_tiny(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def tiny_model_dir_b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny model: same tokenizer and shapes, different random weights (seed 1)."""
    return make_tiny(tmp_path_factory.mktemp("models") / "tiny_b", seed=1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real evaluation data beside the project (../shared/data); skipped where absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not found")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sft_policy(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> tuple[Path, Path]:
    """(policy, data): the tiny model fine-tuned for 150 steps on the arithmetic task's SFT split (about a
    minute), and the task's files. Its answers are well formed and right often enough for selection."""
    import lightning as L

    from bstar_pl.data import SFTDataModule
    from bstar_pl.sft import SFTModule
    from bstar_pl.tasks.arithmetic import ArithmeticSpec, write_splits

    root = tmp_path_factory.mktemp("sft_policy")
    # 2-3 term SFT, 3-4 term pool and test: a minute of SFT leaves a policy right often enough to select from.
    easy, harder = ArithmeticSpec(max_terms=3), ArithmeticSpec(min_terms=3, max_terms=4)
    write_splits(root / "data", (easy,), (1.0,), harder, harder, n_sft=2000, n_pool=200, n_dev=50, n_test=100)
    L.seed_everything(0)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=150,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    policy = root / "policy"
    module = SFTModule(str(tiny_model_dir), lr=1e-3, lr_min=1e-4, warmup_steps=10, export_dir=str(policy))
    data = SFTDataModule(str(root / "data" / "sft.jsonl"), micro_batch_size=32, max_prompt_len=64, max_target_len=96)
    trainer.fit(module, datamodule=data)
    return policy, root / "data"


@pytest.fixture(scope="session")
def bpe_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama with a byte-level BPE tokenizer (GPT-2 style bytes, no pre-splitting), so merges cross "\\n\\n":
    the PRM must not depend on the sentencepiece tokenizer's one-token newlines."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from bstar_pl.tiny import build_model, corpus

    out = tmp_path_factory.mktemp("models") / "bpe"
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    bpe.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    bpe.train_from_iterator(
        corpus(),
        trainers.BpeTrainer(vocab_size=320, special_tokens=["<pad>", "<s>", "</s>"], initial_alphabet=alphabet),
    )
    wrapped = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    wrapped.save_pretrained(out)
    build_model(out, AutoTokenizer.from_pretrained(out), layers=2, hidden=64, heads=2, seed=2)
    return out
