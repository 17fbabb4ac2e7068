"""The tiny CPU end-to-end run (placeholder until the driver lands)."""

from __future__ import annotations

from pathlib import Path


def demo(out: Path = Path("runs/demo")) -> None:
    """Run the demo."""
    print(out)
