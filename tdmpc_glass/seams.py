"""Named seams of a training process, where a test injects a fault (a kill, a full disk) without patching
modules: the code calls through them, a test installs its own function at one by name.

    write(point, default, *args)   the code's own writer, or what is installed at `point` in its place
    notify(point, *args)            an event; what is installed at `point` runs there with `args` (nothing by
                                    default)

Installing a name the code does not offer raises, so a renamed seam fails the test that uses it rather than
silently leaving its fault out. Nothing is installed in a normal run: each call is one dict lookup.
"""
from __future__ import annotations

from typing import Callable

WRITERS = {
    "checkpoint_savez": "writes a checkpoint's arrays into its open temp file: f(file, **arrays)",
    "checkpoint_rename": "renames a written checkpoint temp file over its final name: f(src, dst)",
    "csv_row": "appends one formatted row to a run's CSV: f(file, text)",
}
EVENTS = {
    "checkpoint_saved": "one seed's checkpoint file is complete (resume.save, between the seeds' writes)",
    "eval_env_step": "an evaluation is about to step its envs once",
    "update_round": "a round that runs updates is about to dispatch them",
    "env_receive": "an env pool is about to wait for worker i's answer: f(i)",
}

_installed: dict[str, Callable] = {}


def install(point: str, fn: Callable) -> None:
    """Run `fn` at `point` in this process from now on (a writer in place of the code's own, or an event)."""
    if point not in WRITERS and point not in EVENTS:
        raise ValueError(f"no seam named {point!r}; seams: {', '.join(sorted({**WRITERS, **EVENTS}))}")
    _installed[point] = fn


def uninstall(point: str) -> None:
    """Back to the code's own behaviour at `point` (a test that ran in this process cleans up)."""
    _installed.pop(point, None)


def write(point: str, default: Callable, *args, **kwargs):
    return _installed.get(point, default)(*args, **kwargs)


def notify(point: str, *args) -> None:
    fn = _installed.get(point)
    if fn is not None:
        fn(*args)
