"""bstar_pl: B-STaR self-improvement of reasoning LMs on PyTorch Lightning + vLLM."""

__version__ = "0.1.0"
