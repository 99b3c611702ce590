"""K-labelled rollout videos: what the `videos/render.py` CLI and train.video_at_eval share.

    rollout.py     load a run's checkpoint, roll it out in dm_control (no OpenGL): LoadedRun, Roller, Episode
    gl.py          the headless OpenGL backend choice and GLRenderer, which renders in a child process
    gl_worker.py   that child process (`python -m tdmpc_glass.video.gl_worker`)
    frames.py      the K palette, the text overlay, grid tiling
    timeline.py    the K-timeline figure (matplotlib)
    recorder.py    the files of an episode or a grid (mp4, CSV, latents, timeline, summary) and
                   EvalVideoRecorder, the trainer's hook

Importing this package imports nothing: `tdmpc_glass.video.rollout` pulls in neither OpenGL nor matplotlib.
"""
