"""Bridges to checkpoints written by other code (the authors' release)."""
