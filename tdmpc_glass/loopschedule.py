"""What is due at an env step of the training loop: the one clock the host loop asks.

Everything is counted in env steps per seed (agent steps x action_repeat x envs of the seed). The loop asks
this object, never a modulo of its own: updates of a round (rounds.updates_due: burst or steady), evaluation,
a train.csv row, a checkpoint, the end of the run. The after-round interventions keep their own periods
(interventions.py: each intervention is a phase feature with its own schedule keys).
"""
from __future__ import annotations

from dataclasses import dataclass

from .config import Config, Derived, derive
from .rounds import updates_due


@dataclass(frozen=True)
class LoopSchedule:
    derived: Derived
    total_env_steps: int  # train.steps
    eval_freq: int
    log_freq: int
    checkpoint_freq: int
    episode_ticks: int  # agent steps of an episode (train.episode_length)
    env_steps_per_tick: int  # action_repeat x envs of a seed

    @classmethod
    def from_config(cls, cfg: Config) -> LoopSchedule:
        t = cfg.train
        return cls(derive(cfg), t.steps, t.eval_freq, t.log_freq, t.checkpoint_freq, t.episode_length,
                   t.action_repeat * t.num_envs)

    def env_step(self, tick: int) -> int:
        """env steps per seed after `tick` agent steps of each env."""
        return tick * self.env_steps_per_tick

    def updates(self, env_step: int, burst_done: bool) -> int:
        """Updates of the round ending at env_step (train.explore_updates: burst or steady)."""
        return updates_due(self.derived, env_step, burst_done)

    def exploring(self, env_step: int) -> bool:
        """Uniform random actions at this env step (before EXPL_UNTIL)."""
        return env_step < self.derived.expl_until_env_steps

    def episode_start(self, tick: int) -> bool:
        """Every env of every seed starts a new episode at this tick (and the previous one ended)."""
        return tick % self.episode_ticks == 0

    def eval_due(self, env_step: int, next_eval: int) -> bool:
        return env_step >= next_eval

    def next_eval(self, env_step: int) -> int:
        """The evaluation after the one at env_step."""
        return (env_step // self.eval_freq + 1) * self.eval_freq

    def next_log_row(self, env_step: int) -> int:
        """The env step at which the train.csv window opened at env_step closes."""
        return (env_step // self.log_freq + 1) * self.log_freq

    def log_row_due(self, env_step: int, next_row: int) -> bool:
        return env_step >= next_row

    def next_checkpoint(self, env_step: int) -> int:
        return (env_step // self.checkpoint_freq + 1) * self.checkpoint_freq

    def finished(self, env_step: int) -> bool:
        return env_step >= self.total_env_steps

    def checkpoint_due(self, tick: int, next_checkpoint: int, stopping: bool) -> bool:
        """A checkpoint (and the train.csv row that closes with it) at the first episode end after every
        checkpoint_freq, at the end of the run and on a stop request."""
        env_step = self.env_step(tick)
        return self.episode_start(tick) and (self.finished(env_step) or stopping or env_step >= next_checkpoint)
