"""The `bstar-pl` command: `sft fit` (LightningCLI), `demo`, and the small tools behind them."""

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
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    from bstar_pl.demo import demo
    from bstar_pl.tasks.arithmetic import write_splits
    from bstar_pl.tiny import make_tiny

    commands = {"make-tiny": make_tiny, "make-data": write_splits, "demo": demo}
    try:
        CLI(commands, args=argv, as_positional=False)
    except RecordError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
