"""The `bstar-pl` command: one table of subcommands, each with its one-line help (`bstar-pl --help` lists them all,
`bstar-pl COMMAND --help` shows a command's own options). `sft fit` and `prm fit` are LightningCLIs; the others
parse their arguments from a function's or a dataclass's signature (jsonargparse), so `--config FILE` and
`--print_config` work everywhere."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path


def iterate(args: list[str]) -> None:
    from jsonargparse import CLI

    from bstar_pl.config import Config
    from bstar_pl.loop import run

    run(CLI(Config, args=args, as_positional=False, prog="bstar-pl iterate", description=Config.__doc__))


def sft(args: list[str]) -> None:
    lightning_cli("sft", args)


def prm(args: list[str]) -> None:
    lightning_cli("prm", args)


def lightning_cli(stage: str, args: list[str], run: bool = True) -> object:
    """`bstar-pl sft|prm fit --config ...`: LightningCLI over the stage's module and data module, TensorBoard logs
    under runs/<stage>; a data module's tokenizer is the model's unless set."""
    from lightning.pytorch.cli import LightningCLI

    if stage == "sft":
        from bstar_pl.train.data import SFTDataModule as Data
        from bstar_pl.train.sft import SFTModule as Module
    else:
        from bstar_pl.prm.data import PRMDataModule as Data
        from bstar_pl.prm.module import PRMModule as Module
    logger = {"class_path": "lightning.pytorch.loggers.TensorBoardLogger", "init_args": {"save_dir": f"runs/{stage}"}}
    epochs = 3 if stage == "sft" else 2
    defaults = {"logger": logger, "max_epochs": epochs}
    return LightningCLI(
        Module, Data, args=args, run=run, trainer_defaults=defaults, save_config_kwargs={"overwrite": True}
    )


def report(args: list[str]) -> None:
    """`bstar-pl report RUN_DIR [RUN_DIR ...] --out DIR` (run directories are positional)."""
    from jsonargparse import ArgumentParser

    from bstar_pl.report.markdown import write_report

    parser = ArgumentParser(prog="bstar-pl report", description=write_report.__doc__)
    parser.add_argument("runs", nargs="+", help="run directories of `bstar-pl iterate`")
    parser.add_argument("--out", type=Path, required=True, help="folder for report.md and its PNG figures")
    parser.add_argument("--hard_levels", type=int, nargs="*", default=[], help="lead with Pass@1 on these levels")
    parsed = parser.parse_args(args)
    print(f"report: {write_report(parsed.runs, parsed.out, parsed.hard_levels)}")


def signature(target: str, name: str) -> Callable[[list[str]], None]:
    """The command `name`: one function's signature, `target` = "module:function"."""

    def command(args: list[str]) -> None:
        import importlib

        from jsonargparse import CLI

        module, function = target.split(":")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        CLI(getattr(importlib.import_module(module), function), args=args, as_positional=False, prog=f"bstar-pl {name}")

    return command


COMMANDS: dict[str, tuple[str, Callable[[list[str]], None]]] = {
    "iterate": ("the B-STaR loop (or a baseline) from a config: search, sample, score, select, train", iterate),
    "sft": ("fine-tune a policy: `sft fit --config configs/sft/<model>.yaml` (LightningCLI)", sft),
    "prm": ("train a process reward model: `prm fit --config configs/prm/<model>.yaml` (LightningCLI)", prm),
    "prm-data": (
        "Math-Shepherd step labels from a policy, for `prm fit`",
        signature("bstar_pl.prm.shepherd:prm_data", "prm-data"),
    ),
    "evaluate": (
        "a policy on one test set: Pass@1, Pass@K-S, Reward@K-S",
        signature("bstar_pl.phases.evaluate:evaluate_policy", "evaluate"),
    ),
    "report": ("a markdown report with figures over run directories, seeds as bands", report),
    "demo": (
        "the CPU mini-reproduction: tiny model, data, SFT, PRM, every method",
        signature("bstar_pl.demo:demo", "demo"),
    ),
    "make-tiny": (
        "a tiny random Llama with a sentencepiece tokenizer, offline",
        signature("bstar_pl.models.tiny:make_tiny", "make-tiny"),
    ),
    "make-data": (
        "the demo's arithmetic curriculum (SFT, pool, dev, test)",
        signature("bstar_pl.tasks.curriculum:write_splits", "make-data"),
    ),
    "make-rows": (
        "arithmetic problems as GSM8K rows, by level",
        signature("bstar_pl.tasks.curriculum:write_rows", "make-rows"),
    ),
    "import-gguf": (
        "a GGUF checkpoint as an HF model directory",
        signature("bstar_pl.models.gguf:import_gguf", "import-gguf"),
    ),
    "split": ("one data file into a pool and a held-out test part", signature("bstar_pl.tasks.split:split", "split")),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {summary}" for name, (summary, _) in COMMANDS.items()]
    return "usage: bstar-pl COMMAND [ARGS...]   (bstar-pl COMMAND --help)\n\ncommands:\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run a subcommand; a malformed input ends in one line naming the file and line (or the field)."""
    argv = sys.argv[1:] if argv is None else argv
    # Before torch or vLLM loads: on small CPU machines more OpenMP threads than cores made torch and
    # vLLM intermittently many times slower, and vLLM pins its threads so it cannot lower them later.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    if argv[0] not in COMMANDS:
        sys.exit(f"error: unknown command {argv[0]!r}\n{usage()}")
    from bstar_pl.records import RecordError
    from bstar_pl.report.runs import RunError
    from bstar_pl.settings import ConfigError

    try:
        COMMANDS[argv[0]][1](argv[1:])
    except (RecordError, ConfigError, RunError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
