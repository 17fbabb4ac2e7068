"""The `bstar-pl` command: subcommands run, and bad input ends in one line naming the file and line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bstar_pl.cli import main
from bstar_pl.records import Problem, read_jsonl


def test_make_data_through_the_cli(tmp_path: Path) -> None:
    main(["make-data", "--out", str(tmp_path), "--n_sft=20", "--n_pool=10", "--n_dev=5", "--n_test=5"])
    assert len(read_jsonl(tmp_path / "pool.jsonl", Problem)) == 10


@pytest.mark.slow
def test_make_tiny_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("bstar-pl")
    done = subprocess.run(
        [str(script), "make-tiny", "--out", str(tmp_path / "m"), "--shape.layers", "2"],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in (tmp_path / "m").iterdir()}


def test_print_config_round_trips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["make-tiny", "--out", str(tmp_path), "--shape.hidden", "256", "--print_config"])
    assert "hidden: 256" in capsys.readouterr().out


def test_help_lists_every_command_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from bstar_pl.cli import COMMANDS

    main(["--help"])
    lines = capsys.readouterr().out.splitlines()
    listed = {line.split()[0] for line in lines if line.startswith("  ")}
    assert listed == set(COMMANDS)
    assert {"iterate", "sft", "prm", "prm-data", "evaluate", "report", "demo"} <= listed
    with pytest.raises(SystemExit, match="unknown command 'iterat'"):
        main(["iterat"])
