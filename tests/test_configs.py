"""Every YAML under configs/ is headed by what it does and its command, parses, and (SFT, PRM) instantiates."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from bstar_pl.cli import lightning_cli, main
from bstar_pl.prm.data import PRMDataModule
from bstar_pl.prm.module import PRMModule
from bstar_pl.train.data import SFTDataModule
from bstar_pl.train.sft import SFTModule

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


def command(path: Path) -> list[str]:
    """The subcommand words of the `bstar-pl ... --config <this file>` named on the config's second line."""
    lines = path.read_text().splitlines()
    assert len(lines) > 2 and lines[0].startswith("# ") and lines[1].startswith("# "), f"{path}: two comment lines"
    match = re.search(r"bstar-pl (.*?)--config (\S+)", lines[1])
    assert match, f"{path}: line 2 must give the command, `bstar-pl ... --config {path.relative_to(ROOT)}`"
    assert match[2] == str(path.relative_to(ROOT)), f"{path}: line 2 names another config, {match[2]}"
    return shlex.split(match[1])


def is_sft(path: Path) -> bool:
    return "bstar-pl sft " in path.read_text().split("\n", 2)[1]


def is_prm(path: Path) -> bool:
    return "bstar-pl prm " in path.read_text().split("\n", 2)[1]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_config_parses_with_its_command(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*command(path), "--config", str(path), "--print_config"])
    assert exit_.value.code in (0, None)
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize("path", [p for p in CONFIGS if is_sft(p)], ids=lambda p: str(p.relative_to(ROOT)))
def test_sft_config_instantiates(path: Path, tmp_path: Path) -> None:
    """Module, data and trainer are built (weights load later, in configure_model); GPU configs run on
    one CPU process here, so accelerator, devices and strategy are overridden."""
    overrides = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.strategy=auto"]
    cli = lightning_cli("sft", ["--config", str(path), *overrides, f"--trainer.default_root_dir={tmp_path}"], run=False)
    assert isinstance(cli.model, SFTModule) and isinstance(cli.datamodule, SFTDataModule)
    assert cli.model.model is None  # nothing loaded before configure_model
    assert cli.model.optim.lr > cli.model.optim.lr_min > 0


@pytest.mark.parametrize("path", [p for p in CONFIGS if is_prm(p)], ids=lambda p: str(p.relative_to(ROOT)))
def test_prm_config_instantiates(path: Path, tmp_path: Path) -> None:
    overrides = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.strategy=auto"]
    cli = lightning_cli("prm", ["--config", str(path), *overrides, f"--trainer.default_root_dir={tmp_path}"], run=False)
    assert isinstance(cli.model, PRMModule) and isinstance(cli.datamodule, PRMDataModule)
    assert cli.model.model is None  # nothing loaded before configure_model
    assert cli.model.optim.lr > cli.model.optim.lr_min > 0


def test_mistral_prm_config_has_the_paper_settings(tmp_path: Path) -> None:
    """lr 2e-6 -> 2e-7 (PRMModule's defaults, kept where the config sets only the warmup), 2 epochs, batch 256, bf16."""
    path = ROOT / "configs" / "prm" / "mistral-7b.yaml"
    overrides = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.strategy=auto"]
    model = lightning_cli(
        "prm", ["--config", str(path), *overrides, f"--trainer.default_root_dir={tmp_path}"], run=False
    ).model
    assert (model.optim.lr, model.optim.lr_min, model.hparams.param_dtype) == (2e-6, 2e-7, "bfloat16")
    config = yaml.safe_load(path.read_text())
    trainer = config["trainer"]
    dp = trainer["strategy"]["init_args"]["data_parallel_size"]
    assert config["data"]["micro_batch_size"] * dp * trainer["accumulate_grad_batches"] == 256
    assert trainer["max_epochs"] == 2
