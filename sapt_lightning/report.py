"""`python -m sapt_lightning.report`: the short name of sapt_lightning.reporting.compare."""

from .reporting.compare import main

if __name__ == "__main__":
    raise SystemExit(main())
