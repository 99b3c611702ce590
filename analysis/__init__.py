"""Analysis of a runs root (the layout of tdmpc_glass/runlayout.py; README, "Analysis" and "Dashboard"), shared
by the command-line tools and the dashboard:

- `analysis.runs`: the one run loader (lenient with running/failed runs, partial CSV rows, foreign folders;
  merges phases through their aliases);
- `analysis.seed_stats`: per-seed and per-phase tables, the phase ledger (G1/G2), compare; callable with plain
  arguments (`seed_stats.report`) or as `python analysis/seed_stats.py`;
- `analysis.uncertainty`: IQM / mean with stratified-bootstrap CIs, probability of improvement (rliable), Welch;
- `analysis.curves`: learning curves with 95% bootstrap bands, optional published reference curves;
- `analysis.colors`: the stable colour of each phase;
- `analysis.dashboard`: the live Dash app, its pages in `dashboard_curves`, `dashboard_run`, `dashboard_ledger`.

From the training library only `tdmpc_glass.runlayout` (standard library only) is imported: no JAX, nothing of
experiments/; phases/*.yaml are read as plain YAML.
"""
