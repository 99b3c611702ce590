"""Analysis of a runs root (the layout of INTERFACES.md), shared by the command-line tools, the dashboard and the
video tools:

- `analysis.runs`: the one run loader (lenient with running/failed runs, partial CSV rows, foreign folders;
  merges phases through their aliases);
- `analysis/seed_stats.py`: per-seed and per-phase tables, the phase ledger (G1/G2), --compare;
- `analysis.uncertainty`: IQM / mean with stratified-bootstrap CIs, probability of improvement (rliable), Welch;
- `analysis/curves.py`: learning curves with 95% bootstrap bands, optional published reference curves;
- `analysis.colors`: the stable colour of each phase.

Nothing here imports experiments/ or tdmpc_glass/: phases/*.yaml are read as plain YAML.
"""
