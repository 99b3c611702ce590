"""The environment the training loop sees: S seeds x E envs of an EnvPool, with the phase ledger's env-side
features as wrappers around it.

    env = training_env(cfg, run_seeds, pool)
    obs = env.reset(episode)                         (S, E, obs_dim) for the model
    obs, reward = env.step(actions, ctx)             actions (S, E, A) in [-1, 1]; reward (S, E) for the buffer
    env.round_metrics(env_step)                      {name: (S,) array} for train.csv, once per round
    env.state(i) / env.load(i, state)                seed i's wrapper state, kept in its checkpoint meta

Wrappers (each one feature, outermost first):
- ActionNoise (schedule.action_noise_*, phases 1c, d_v1): Gaussian noise on the policy's actions after
  EXPL_UNTIL, clipped; the buffer stores the executed action.
- Shaping (shaping.*, benchmark-unfair phases): shaped rewards into the buffer; evaluation never shapes.
- MultiTask (multitask.*, research log 10.8): each env draws its task per episode; the one-hot task id joins
  the observation.
A new env-side feature is one more wrapper here and one line in `training_env`.

Every draw is a pure function of (run seed, episode or tick), so a resumed run repeats the uninterrupted one.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import multitask, schedules
from ..config import Config
from . import shaping as shaping_lib

TRAIN_STREAM, EVAL_STREAM = 0, 1  # reset-seed streams of training and evaluation episodes


def episode_seeds(run_seeds, stream: int, index: int, per_seed: int) -> np.ndarray:
    """Reset seeds (S * per_seed,) for episode `index` of a stream; seed-major order, like the env pools."""
    return np.array([np.random.SeedSequence([s, stream, index, i]).generate_state(1)[0]
                     for s in run_seeds for i in range(per_seed)], dtype=np.int64)


class StepContext(NamedTuple):
    """What a wrapper may need to know about the step being taken."""

    tick: int  # agent steps taken so far by each env (the loop's counter)
    env_step: int  # env steps of the seed's batch before this step
    exploring: bool  # uniform random actions (before EXPL_UNTIL): no action noise


class PoolEnv:
    """The innermost environment: the pool's flat arrays as (S, E, ...) and its training episodes' seeds."""

    def __init__(self, pool, run_seeds, num_envs: int):
        self.pool, self.run_seeds, self.E = pool, list(run_seeds), num_envs
        self.S = len(self.run_seeds)
        self.obs_dim, self.act_dim = pool.obs_dim, pool.act_dim
        self.task_ids = None  # set by MultiTask before a reset

    def reset(self, episode: int) -> np.ndarray:
        seeds = episode_seeds(self.run_seeds, TRAIN_STREAM, episode, self.E)
        ids = None if self.task_ids is None else self.task_ids.reshape(-1)
        return self.pool.reset(seeds, ids).reshape(self.S, self.E, -1)

    def step(self, actions: np.ndarray, ctx: StepContext):
        obs, reward = self.pool.step(actions.reshape(self.S * self.E, -1))
        return obs.reshape(self.S, self.E, -1), reward.reshape(self.S, self.E)

    def round_metrics(self, env_step: int) -> dict:
        return {}

    def state(self, i: int) -> dict:
        return {}

    def load(self, i: int, state: dict) -> None:
        pass


class Wrapper:
    """Passes everything to the inner env; a feature overrides what it changes."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):  # pool, run_seeds, S, E, act_dim, task_ids ... of the inner env
        return getattr(self.inner, name)

    def reset(self, episode: int) -> np.ndarray:
        return self.inner.reset(episode)

    def step(self, actions: np.ndarray, ctx: StepContext):
        return self.inner.step(actions, ctx)

    def round_metrics(self, env_step: int) -> dict:
        return self.inner.round_metrics(env_step)

    def state(self, i: int) -> dict:
        return self.inner.state(i)

    def load(self, i: int, state: dict) -> None:
        self.inner.load(i, state)


class ActionNoise(Wrapper):
    """schedule.action_noise_*: noise of std(env_step) on the policy's actions, drawn from (run seed, tick)."""

    def __init__(self, inner, schedule):
        super().__init__(inner)
        self.schedule = schedule

    def step(self, actions, ctx: StepContext):
        if not ctx.exploring:
            actions = schedules.action_noise(actions, self.run_seeds, ctx.tick,
                                             schedules.action_noise_std(self.schedule, ctx.env_step))
        return self.inner.step(actions, ctx)

    def round_metrics(self, env_step: int) -> dict:
        std = schedules.action_noise_std(self.schedule, env_step)
        return {"action_noise_std": np.full(self.S, std), **self.inner.round_metrics(env_step)}


class Shaping(Wrapper):
    """shaping.*: the buffer's rewards are shaped with the hopper terms the pool measured (`pool_measure`)."""

    def __init__(self, inner, shaping):
        super().__init__(inner)
        self.shaping = shaping
        self._added, self._steps = np.zeros(self.S), 0  # shaping added per agent step in this round

    def step(self, actions, ctx: StepContext):
        obs, reward = self.inner.step(actions, ctx)
        shaped = shaping_lib.shaped_reward(reward.reshape(-1), self.pool.measured, self.shaping, ctx.env_step)
        shaped = shaped.reshape(reward.shape)
        self._added += (shaped - reward).mean(1)
        self._steps += 1
        return obs, shaped

    def round_metrics(self, env_step: int) -> dict:
        mean = self._added / max(self._steps, 1)
        self._added, self._steps = np.zeros(self.S), 0
        return {"shaping_reward": mean, **self.inner.round_metrics(env_step)}


class MultiTask(Wrapper):
    """multitask.*: per-episode task draws by the usage controller; the one-hot task id joins the obs."""

    def __init__(self, inner, cfg: Config):
        super().__init__(inner)
        self.tasks = multitask.tasks_of(cfg)
        self.sampler = multitask.TaskSampler(cfg, self.S)

    def reset(self, episode: int) -> np.ndarray:
        ids = self.sampler.sample(self.run_seeds, episode, self.E)
        self.sampler.observe(ids)
        self.inner.task_ids = self._ids = ids
        return multitask.with_task_id(self.inner.reset(episode), ids, len(self.tasks))

    def step(self, actions, ctx: StepContext):
        obs, reward = self.inner.step(actions, ctx)
        return multitask.with_task_id(obs, self._ids, len(self.tasks)), reward

    def round_metrics(self, env_step: int) -> dict:
        out = dict(self.inner.round_metrics(env_step))
        for k, task in enumerate(self.tasks):
            out[f"task_p_{task}"] = self.sampler.p[:, k].copy()
            out[f"task_u_{task}"] = self.sampler.u[:, k].copy()
        return out

    def state(self, i: int) -> dict:
        return {**self.inner.state(i), **self.sampler.state(i)}

    def load(self, i: int, state: dict) -> None:
        self.inner.load(i, state)
        self.sampler.load(i, state)


def pool_measure(cfg: Config):
    """What the training pool must measure after every control step for the wrappers (the pool's `measure`):
    the hopper's shaping terms when shaping is on, else None. Only training pools measure; evaluation never
    shapes."""
    return shaping_lib.HopperTerms if shaping_lib.enabled(cfg.shaping) else None


def training_env(cfg: Config, run_seeds, pool):
    """The wrapped training environment of a config over `pool` (S * E envs, built with `pool_measure(cfg)`)."""
    env = PoolEnv(pool, run_seeds, cfg.train.num_envs)
    if cfg.multitask.tasks:
        env = MultiTask(env, cfg)
    if shaping_lib.enabled(cfg.shaping):
        env = Shaping(env, cfg.shaping)
    s = cfg.schedule
    if s.action_noise_start or s.action_noise_end:
        env = ActionNoise(env, s)
    return env


def eval_observation(cfg: Config):
    """obs (S, n, obs_dim) of evaluation episodes on `task` -> what the model reads (its task id when
    multi-task)."""
    if not cfg.multitask.tasks:
        return lambda obs: obs
    tasks = multitask.tasks_of(cfg)
    return lambda obs: multitask.with_task_id(obs, np.full(obs.shape[:-1], tasks.index(cfg.task)), len(tasks))
