"""K-labelled rollout videos (`python videos/render.py --run RUN`; `make video RUN=...`).

The CLI lives here; what training also needs (loading a run, the rollout, rendering, the files) is in the
library's subpackage tdmpc_glass/video/ (rollout.py, gl.py, gl_worker.py, frames.py, timeline.py,
recorder.py). tdmpc_glass never imports this package.
"""
