"""Multi-task training (research log 10.8): one model and one Glass partition over several tasks.

The envs of a seed are spread over `multitask.tasks` per episode: at every episode start each env draws its
task from the seed's probabilities p. After the draw, the usage u (an exponential moving average, rate
`usage_rate`, of the share of the seed's envs on each task per episode) and p move by the target-usage
controller
    u <- (1 - usage_rate) u + usage_rate * share,     p <- softmax(log p + eta (u* - u)),
with u* = target_usage normalised (uniform when empty); p and u start at u*. With eta = 0 the draws stay at
u*. The controller state (p, u) of each seed is host-side numpy, saved in its checkpoint meta.

The task id joins the observation as a one-hot (obs_dim grows by the number of tasks); evaluation runs on
`task` with its own id. All tasks must share one obs/act spec (config.check).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .config import Config

TASK_TAG = 11  # numpy seed-sequence tag of the per-episode task draws
LOG_P_MIN = np.log(1e-6)  # p never reaches 0, so log p stays finite


def tasks_of(cfg: Config) -> list[str]:
    """The training tasks: multitask.tasks, or [task] for a single-task run."""
    return list(cfg.multitask.tasks) or [cfg.task]


def model_obs_dim(cfg: Config, env_obs_dim: int) -> int:
    """What the model reads: the env's observation plus, when multi-task, one one-hot entry per task."""
    return env_obs_dim + len(cfg.multitask.tasks)


def target_usage(cfg: Config) -> np.ndarray:
    """u* (T,), summing to 1."""
    mt = cfg.multitask
    target = np.asarray(mt.target_usage if mt.target_usage else [1.0] * len(tasks_of(cfg)), np.float64)
    return target / target.sum()


def one_hot(task_ids: np.ndarray, num_tasks: int) -> np.ndarray:
    """task_ids (...,) ints -> (..., num_tasks) float32."""
    return np.eye(num_tasks, dtype=np.float32)[np.asarray(task_ids)]


def with_task_id(obs: np.ndarray, task_ids: np.ndarray, num_tasks: int) -> np.ndarray:
    """obs (..., obs_dim), task_ids (...,) -> (..., obs_dim + num_tasks): the one-hot id appended."""
    return np.concatenate([obs, one_hot(task_ids, num_tasks)], axis=-1)


class TaskSampler:
    """Per-seed task probabilities p (S, T) and usage u (S, T) with the target-usage controller."""

    def __init__(self, cfg: Config, num_seeds: int):
        self.target = target_usage(cfg)
        self.eta, self.rate = cfg.multitask.eta, cfg.multitask.usage_rate
        self.p = np.tile(self.target, (num_seeds, 1))
        self.u = np.tile(self.target, (num_seeds, 1))

    @property
    def num_tasks(self) -> int:
        return len(self.target)

    def sample(self, run_seeds: Sequence[int], episode_index: int, num_envs: int) -> np.ndarray:
        """(S, E) task ids of one episode, drawn from [seed, TASK_TAG, episode_index] with each seed's p."""
        return np.stack([np.random.default_rng([int(s), TASK_TAG, int(episode_index)]).choice(
            self.num_tasks, size=num_envs, p=p / p.sum()) for s, p in zip(run_seeds, self.p)])

    def observe(self, task_ids: np.ndarray) -> None:
        """Update u and p with one episode's task ids (S, E)."""
        share = np.stack([np.bincount(ids, minlength=self.num_tasks) / len(ids) for ids in task_ids])
        self.u = (1.0 - self.rate) * self.u + self.rate * share
        logits = np.maximum(np.log(np.maximum(self.p, 1e-300)), LOG_P_MIN) + self.eta * (self.target - self.u)
        logits -= logits.max(axis=1, keepdims=True)
        self.p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)

    def state(self, i: int) -> dict:
        return {"task_p": self.p[i].tolist(), "task_u": self.u[i].tolist()}

    def load(self, i: int, state: dict) -> None:
        self.p[i] = np.asarray(state["task_p"], np.float64)
        self.u[i] = np.asarray(state["task_u"], np.float64)
