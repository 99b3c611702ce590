"""Environments: dm_control suite tasks (the benchmark of record), stepped in-process or on CPU worker processes."""
from .dmc import EnvPool, flatten_observation, list_tasks, load, parse_task, task_spec, validate_task

__all__ = ["EnvPool", "flatten_observation", "list_tasks", "load", "parse_task", "task_spec", "validate_task"]
