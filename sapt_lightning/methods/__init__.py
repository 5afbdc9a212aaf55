"""Continual-learning methods. A method of your own subclasses `ContinualModule` and registers
with `@register_method` (see examples/custom_method)."""

from .base import ContinualModule
from .registry import register_method

__all__ = ["ContinualModule", "register_method"]
