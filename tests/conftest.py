"""Shared fixtures: the tiny offline models, built once per session; a session-wide engine on one of them; a quiet
CPU Lightning trainer and a loss recorder; the strategy flags of a two-rank gloo job. A single-threaded CPU.

Tiers: a test that starts a vLLM engine is marked `engine`, one that trains with Lightning `fit` (both also when a
fixture or a child process does it for them); `make test-fast` leaves them out. An unmarked test that tries either
fails at once, so the fast tier stays fast."""

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

import gc  # noqa: E402
from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

import lightning as L  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from bstar_pl.models.tiny import make_tiny  # noqa: E402

if TYPE_CHECKING:
    from bstar_pl.engine import Engine

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


# Fixtures that start an engine or train: a test that uses one has that marker too.
MARKED_BY_FIXTURE = {"sft_policy": "fit", "tiny_engine": "engine"}
QUIET = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False}
TWO_RANKS = [
    "--trainer.devices=2",
    "--trainer.strategy=ModelParallelStrategy",
    "--trainer.strategy.data_parallel_size=2",
    "--trainer.strategy.tensor_parallel_size=1",
    "--trainer.strategy.process_group_backend=gloo",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for fixture, marker in MARKED_BY_FIXTURE.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


@pytest.fixture(autouse=True)
def tiers_are_honest(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unmarked test may neither start a vLLM engine nor fit: it would make `make test-fast` slow."""
    import lightning as L

    from bstar_pl.engine import Engine

    def refuse(what: str, marker: str) -> object:
        def fail(*args: object, **kwargs: object) -> None:
            raise AssertionError(f"this test {what}: mark it @pytest.mark.{marker}")

        return fail

    if request.node.get_closest_marker("engine") is None:
        monkeypatch.setattr(Engine, "__init__", refuse("starts a vLLM engine", "engine"))
    if request.node.get_closest_marker("fit") is None:
        monkeypatch.setattr(L.Trainer, "fit", refuse("trains (Trainer.fit)", "fit"))


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
def tiny_engine(tiny_model_dir: Path) -> Iterator[Engine]:
    """A vLLM engine on the tiny model (fp32, short contexts), shared by the session: starting one costs seconds.
    A test that swaps other weights in puts the tiny model's back (`engine.reload(tiny_model_dir)`)."""
    from bstar_pl.engine import Engine
    from bstar_pl.settings import EngineSettings

    engine = Engine(tiny_model_dir, EngineSettings(dtype="float32", max_model_len=256, max_new_tokens=24), seed=3)
    yield engine
    del engine
    gc.collect()


@pytest.fixture(scope="session")
def cpu_trainer() -> Callable[..., L.Trainer]:
    """A factory of quiet one-process CPU trainers: `cpu_trainer(steps, callbacks=[...], **trainer_kwargs)`."""

    def make(steps: int = -1, callbacks: Sequence[L.Callback] = (), **kwargs: object) -> L.Trainer:
        settings = {"max_epochs": -1, "max_steps": steps, "gradient_clip_val": 1.0, **kwargs}
        return L.Trainer(accelerator="cpu", devices=1, callbacks=list(callbacks), **QUIET, **settings)

    return make


class Losses(L.Callback):
    """The loss of every training step, in order."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, out: dict, batch: dict, i: int) -> None:
        self.losses.append(float(out["loss"]))


@pytest.fixture(scope="session")
def losses() -> Callable[[], Losses]:
    """A factory of loss recorders (a Lightning callback with `.losses`)."""
    return Losses


@pytest.fixture(scope="session")
def two_ranks() -> list[str]:
    """LightningCLI flags of a two-rank FSDP2 job on CPU (gloo)."""
    return list(TWO_RANKS)


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

    from bstar_pl.tasks.arithmetic import ArithmeticSpec
    from bstar_pl.tasks.curriculum import write_splits
    from bstar_pl.train.builders import Optim
    from bstar_pl.train.data import SFTDataModule
    from bstar_pl.train.sft import SFTModule

    root = tmp_path_factory.mktemp("sft_policy")
    # 2-3 term SFT, 3-4 term pool and test: a minute of SFT leaves a policy right often enough to select from.
    easy, harder = ArithmeticSpec(max_terms=3), ArithmeticSpec(min_terms=3, max_terms=4)
    write_splits(root / "data", (easy,), (1.0,), harder, harder, n_sft=2000, n_pool=200, n_dev=50, n_test=100)
    L.seed_everything(0)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=150, **QUIET)
    policy = root / "policy"
    module = SFTModule(str(tiny_model_dir), optim=Optim(lr=1e-3, lr_min=1e-4, warmup_steps=10), export_dir=str(policy))
    data = SFTDataModule(str(root / "data" / "sft.jsonl"), micro_batch_size=32, max_prompt_len=64, max_target_len=96)
    trainer.fit(module, datamodule=data)
    return policy, root / "data"


@pytest.fixture(scope="session")
def bpe_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama with a byte-level BPE tokenizer (GPT-2 style bytes, no pre-splitting), so merges cross "\\n\\n":
    the PRM must not depend on the sentencepiece tokenizer's one-token newlines."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from bstar_pl.models.tiny import Shape, build_model, corpus

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
    build_model(out, AutoTokenizer.from_pretrained(out), Shape(layers=2, hidden=64, heads=2), seed=2)
    return out
