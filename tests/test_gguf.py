"""`bstar-pl import-gguf`: a GGUF file -> an HF directory with the same weights and tokenizer; then the real
SmolLM2-135M-Instruct through SFT with its chat template and an in-place swap into the vLLM engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bstar_pl.models.gguf import SMOLLM2, import_gguf, packaged_gguf
from bstar_pl.settings import ConfigError


def test_bad_arguments_fail_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        import_gguf(tmp_path / "out", gguf=tmp_path / "missing.gguf")
    (tmp_path / "taken").mkdir()
    with pytest.raises(ConfigError, match="already exists"):
        import_gguf(tmp_path / "taken", gguf=tmp_path / "missing.gguf")
    with pytest.raises(ConfigError, match="dtype"):
        import_gguf(tmp_path / "out", dtype="int3")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        gguf = packaged_gguf()
    except ConfigError:
        pytest.skip(f"{SMOLLM2[0]} is not installed (make venv installs it)")
    return import_gguf(tmp_path_factory.mktemp("real") / "smollm2", gguf)


@pytest.mark.slow
def test_imported_model_equals_the_gguf(smollm2: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = packaged_gguf()
    config = json.loads((smollm2 / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"]
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    ids = torch.tensor([tokenizer("Natalia sold clips to 48 of her friends.").input_ids])
    with torch.no_grad():
        ours = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32)(ids).logits
        theirs = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)(ids).logits
    assert torch.equal(ours, theirs)


SWAP_CHECK = """
import json, sys, torch, lightning as L
from pathlib import Path
from transformers import AutoModelForCausalLM, AutoTokenizer
from safetensors.torch import load_file
from bstar_pl.train.data import SFTDataModule
from bstar_pl.prompt import prompt_ids
from bstar_pl.engine import Engine
from bstar_pl.settings import EngineSettings
from bstar_pl.train.sft import SFTModule
from bstar_pl.train.builders import Optim
from bstar_pl.tasks import gsm8k
from bstar_pl.prompt import PromptFormat
from bstar_pl.records import SFTExample

base, data, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
fmt = PromptFormat(chat=True)
problems = gsm8k.load(data, limit=16)
sampler = Engine(base, EngineSettings(dtype="float32", max_model_len=1024, max_new_tokens=40), seed=0, prompt=fmt)
greedy = lambda: [s.text for s in sampler.generate(problems[:4], [0.0], 1, progress=False)]
before = greedy()
# A few SFT steps on the references with the chat prompt, then the new weights into the running engine.
L.seed_everything(0)
module = SFTModule(str(base), optim=Optim(lr=1e-4, lr_min=1e-5), export_dir=str(out))
dm = SFTDataModule(micro_batch_size=4, max_prompt_len=256, max_target_len=256, prompt=fmt)
dm.set_examples([SFTExample(p.question, p.solution) for p in problems])
L.Trainer(accelerator="cpu", devices=1, max_steps=3, logger=False, enable_checkpointing=False,
          enable_progress_bar=False, enable_model_summary=False).fit(module, datamodule=dm)
sampler.load_weights(load_file(out / "model.safetensors").items())
after = greedy()
tokenizer = AutoTokenizer.from_pretrained(out)
model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
reference = []
for p in problems[:4]:
    ids = torch.tensor([prompt_ids(tokenizer, p.question, fmt)])
    new = model.generate(ids, max_new_tokens=40, do_sample=False)[0, ids.shape[1]:]
    reference.append(tokenizer.decode(new, skip_special_tokens=True))
print(json.dumps({"before": before, "after": after, "transformers": reference}))
"""


@pytest.mark.engine
@pytest.mark.fit
@pytest.mark.slow
def test_sft_with_the_chat_template_then_swap_matches_transformers(
    smollm2: Path, shared_data: Path, tmp_path: Path
) -> None:
    """SmolLM2's tied embeddings, 49k-token BPE vocabulary and ChatML prompt through the general code."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLLM_LOGGING_LEVEL": "ERROR"}
    run = subprocess.run(
        [sys.executable, "-c", SWAP_CHECK, str(smollm2), str(shared_data / "gsm8k_test.jsonl"), str(tmp_path / "p")],
        capture_output=True, text=True, env=env, timeout=1200,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found["after"] == found["transformers"]
    assert found["after"] != found["before"], "three SFT steps should change some greedy output"
