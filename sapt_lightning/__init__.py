"""sapt_lightning: SAPT continual learning on PyTorch Lightning + Hydra."""

__version__ = "0.1.0"
