"""K-labelled rollout videos (`python videos/render.py --run RUN`; `make video RUN=...`).

The CLI lives here; what training also needs (loading a run, the rollout, rendering, the files) is in the
library: tdmpc_glass/rollout.py, render.py, gl_worker.py and video.py. tdmpc_glass never imports this package.
"""
