"""PRM training over two gloo processes (FSDP2 under ModelParallelStrategy) against one process accumulating two."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bstar_pl.prm.alignment import prm_steps
from bstar_pl.prm.model import HEAD_FILE, REFERENCE_DIR
from bstar_pl.prm.rows import write_prm
from bstar_pl.records import PRMExample
from bstar_pl.tasks import arithmetic

pytestmark = pytest.mark.fit

ROOT = Path(__file__).resolve().parents[1]


def examples() -> list[PRMExample]:
    """Reference solutions (every step good) and nonsense ones (every step bad)."""
    out = []
    for p in arithmetic.generate("train", 32, arithmetic.ArithmeticSpec(min_terms=3, max_terms=3), seed=0):
        steps = prm_steps(p.solution)
        out.append(PRMExample(input=p.question, output=steps, label=[1.0] * len(steps)))
        out.append(PRMExample(input=p.question, output=["? = ?", "? = ?\n\n# Answer\n\n?"], label=[0.0, 0.0]))
    return out


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("reward", ["head", "implicit"])
def test_two_ranks_train_the_prm_like_one(
    tiny_model_dir: Path, tmp_path: Path, two_ranks: list[str], reward: str
) -> None:
    write_prm(tmp_path / "prm.jsonl", examples())
    common = [
        f"--config={ROOT / 'configs' / 'prm' / 'tiny.yaml'}",
        f"--model.model_path={tiny_model_dir}",
        f"--model.reward={reward}",
        "--model.beta=0.5",
        "--model.optim.total_steps=3",
        f"--data.train_file={tmp_path / 'prm.jsonl'}",
        "--data.micro_batch_size=4",
        "--trainer.max_epochs=-1",
        "--trainer.max_steps=3",
        "--trainer.enable_progress_bar=false",
        "--seed_everything=0",
    ]
    for name, extra in (("two", two_ranks), ("one", ["--trainer.accumulate_grad_batches=2"])):
        out = [f"--model.export_dir={tmp_path / name}", f"--trainer.logger.save_dir={tmp_path / name}_logs"]
        run([str(Path(sys.executable).with_name("bstar-pl")), "prm", "fit", *common, *extra, *out], tmp_path)

    files = ["model.safetensors", HEAD_FILE] if reward == "head" else ["model.safetensors"]
    start = load_file(tiny_model_dir / "model.safetensors")
    for file in files:
        two, one = load_file(tmp_path / "two" / file), load_file(tmp_path / "one" / file)
        assert set(two) == set(one)
        for name in one:
            torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-5, msg=f"{file}: {name}")
    key = "layers.0.mlp.up_proj.weight" if reward == "head" else "model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(
        load_file(tmp_path / "two" / "model.safetensors")[key], start["model.layers.0.mlp.up_proj.weight"]
    )
    if reward == "implicit":  # the frozen reference gathers from the shards as it started
        reference = load_file(tmp_path / "two" / REFERENCE_DIR / "model.safetensors")
        assert all(torch.equal(reference[k], start[k]) for k in start)


def run(command: list[str], cwd: Path) -> None:
    done = subprocess.run(command, cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
