"""The `bstar-pl` command: `sft fit` and `prm fit` (LightningCLI), `prm-data`, `demo` and smaller tools."""

from __future__ import annotations

import os
import sys

from jsonargparse import CLI

from bstar_pl.records import RecordError


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
        if argv[:1] == ["prm"]:
            prm_cli(argv[1:])
            return
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        from bstar_pl.demo import demo
        from bstar_pl.shepherd import prm_data
        from bstar_pl.tasks.arithmetic import write_splits
        from bstar_pl.tiny import make_tiny

        commands = {"make-tiny": make_tiny, "make-data": write_splits, "demo": demo, "prm-data": prm_data}
        CLI(commands, args=argv, as_positional=False)
    except RecordError as e:
        sys.exit(f"error: {e}")


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
