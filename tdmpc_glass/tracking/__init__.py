"""Exports of runs to TensorBoard and Weights & Biases: live while a run trains, or after the fact.

The run's files are the record (eval.csv, train.csv, videos/); exports follow them, never lead:
  rows.py         a run's rows on disk as env steps (values + media), and one live row the same way
  feed.py         per tracker: what it has durably sent, the step it holds back, what to send next
  tensorboard.py  tensorboardX event files in <run>/tensorboard/ (purge_step hides what a kill left over)
  wandb_sink.py   one W&B run per seed (offline or online), its id kept in the run dir
  wandb_files.py  reads W&B's own transaction logs (what a killed process had really written)
  exporter.py     one run's trackers fed from its files and its live rows
  live.py         a training batch's exporters on a background thread (never blocks training)
`tensorboardX` and `wandb` are optional extras, imported only when a tracker is switched on.
"""
