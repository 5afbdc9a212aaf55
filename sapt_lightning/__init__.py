"""sapt_lightning: SAPT continual learning on PyTorch Lightning + Hydra."""

from .resolvers import register_resolvers

__version__ = "0.1.0"

register_resolvers()
