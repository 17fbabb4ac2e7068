"""The `bstar-pl` command: `sft fit` and `prm fit` (LightningCLI), `prm-data`, `iterate` (the B-STaR loop),
`evaluate`, `report`, `demo`, and small tools."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from jsonargparse import CLI

from bstar_pl.config import ConfigError
from bstar_pl.records import RecordError
from bstar_pl.runs import RunError


def main(argv: list[str] | None = None) -> None:
    """Dispatch a subcommand; a malformed input ends in one line naming the file and line."""
    argv = sys.argv[1:] if argv is None else argv
    # Before torch or vLLM loads: on small CPU machines more OpenMP threads than cores made torch and
    # vLLM intermittently many times slower, and vLLM pins its threads so it cannot lower them later.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    try:
        if argv[:1] == ["sft"]:
            sft_cli(argv[1:])
            return
        if argv[:1] == ["iterate"]:
            from bstar_pl.config import Config
            from bstar_pl.driver import iterate

            iterate(CLI(Config, args=argv[1:], as_positional=False))
            return
        if argv[:1] == ["prm"]:
            prm_cli(argv[1:])
            return
        if argv[:1] == ["report"]:
            report_cli(argv[1:])
            return
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        from bstar_pl.demo import demo
        from bstar_pl.evaluate_cli import evaluate
        from bstar_pl.gguf import import_gguf
        from bstar_pl.shepherd import prm_data
        from bstar_pl.split import split
        from bstar_pl.tasks.arithmetic import write_rows, write_splits
        from bstar_pl.tiny import make_tiny

        commands = {
            "make-tiny": make_tiny,
            "make-data": write_splits,
            "make-rows": write_rows,
            "import-gguf": import_gguf,
            "split": split,
            "prm-data": prm_data,
            "demo": demo,
            "evaluate": evaluate,
        }
        CLI(commands, args=argv, as_positional=False)
    except (RecordError, ConfigError, RunError) as e:
        sys.exit(f"error: {e}")


def report_cli(args: list[str]) -> None:
    """`bstar-pl report RUN_DIR [RUN_DIR ...] --out DIR` (run directories are positional, hence no CLI())."""
    from jsonargparse import ArgumentParser

    from bstar_pl.report import write_report

    parser = ArgumentParser(prog="bstar-pl report", description=write_report.__doc__)
    parser.add_argument("runs", nargs="+", help="run directories of `bstar-pl iterate`")
    parser.add_argument("--out", type=Path, required=True, help="folder for report.md and its PNG figures")
    parser.add_argument("--hard_levels", type=int, nargs="*", default=[], help="lead with Pass@1 on these levels")
    parsed = parser.parse_args(args)
    print(f"report: {write_report(parsed.runs, parsed.out, parsed.hard_levels)}")


def sft_cli(args: list[str], run: bool = True) -> object:
    """`bstar-pl sft fit --config ...`: LightningCLI over SFTModule and SFTDataModule.

    Defaults: TensorBoard logs under runs/sft; the data module's tokenizer is the model's unless set.
    """
    from lightning.pytorch.cli import LightningCLI

    from bstar_pl.data import SFTDataModule
    from bstar_pl.sft import SFTModule

    logger = {"class_path": "lightning.pytorch.loggers.TensorBoardLogger", "init_args": {"save_dir": "runs/sft"}}
    return LightningCLI(
        SFTModule,
        SFTDataModule,
        args=args,
        run=run,
        trainer_defaults={"logger": logger, "max_epochs": 3},
        save_config_kwargs={"overwrite": True},
    )


def prm_cli(args: list[str], run: bool = True) -> object:
    """`bstar-pl prm fit --config ...`: LightningCLI over PRMModule and PRMDataModule (TensorBoard under runs/prm)."""
    from lightning.pytorch.cli import LightningCLI

    from bstar_pl.prm import PRMModule
    from bstar_pl.prm_data import PRMDataModule

    logger = {"class_path": "lightning.pytorch.loggers.TensorBoardLogger", "init_args": {"save_dir": "runs/prm"}}
    return LightningCLI(
        PRMModule,
        PRMDataModule,
        args=args,
        run=run,
        trainer_defaults={"logger": logger, "max_epochs": 2},
        save_config_kwargs={"overwrite": True},
    )


if __name__ == "__main__":
    main()
