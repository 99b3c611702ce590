"""Analysis of a runs root: the shared run loader (`analysis.runs`), seed statistics and the phase ledger
(`analysis/seed_stats.py`), learning curves (`analysis/curves.py`) and the colour of each phase
(`analysis.colors`). Reads only the runs layout of INTERFACES.md; never imports experiments/.
"""
