"""`python -m sapt_lightning.tables`: the short name of sapt_lightning.reporting.tables."""

from .reporting.tables import main

if __name__ == "__main__":
    raise SystemExit(main())
