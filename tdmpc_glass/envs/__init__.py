"""Environments behind one suite seam (suites.py): dm_control (the benchmark of record, the default) and MuJoCo
Playground's MJX suite (`playground:` tasks), stepped by one pool in-process or on CPU worker processes."""
from .dmc import flatten_observation, load, parse_task
from .pool import EnvPool
from .suites import control_timestep, describe, list_tasks, task_spec, touch_indices, validate_task

__all__ = ["EnvPool", "control_timestep", "describe", "flatten_observation", "list_tasks", "load", "parse_task",
           "task_spec", "touch_indices", "validate_task"]
