from .load import Backbone, load_backbone

__all__ = ["Backbone", "load_backbone"]
