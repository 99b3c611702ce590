"""Environments: dm_control suite tasks (the benchmark of record), stepped on CPU worker processes."""
from .dmc import EnvPool, list_tasks, load, task_spec, validate_task

__all__ = ["EnvPool", "list_tasks", "load", "task_spec", "validate_task"]
