"""Reporting: the results.json schema, one run's report, the seed-averaged comparison over
runs, the paper's published numbers and the sweeps of its tables and figures.

Nothing here imports torch, so reports can be made wherever results were copied to.
"""
