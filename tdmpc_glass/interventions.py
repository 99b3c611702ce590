"""After-round interventions: scheduled changes to the agent states between two training rounds.

After every round the loop calls each intervention's `after_round(states, view)`; it returns the (possibly
changed) states and the events to log. An event may take its seed out of the batch (`leave`), e.g. a basin
restart. The loop owns logging and the batch mask; an intervention owns only its decision and its change.

    QReset      schedule.q_reset_at   (phase e)      fresh Q heads and their Adam state
    Perturb     schedule.perturb_at   (phases m, n)  parameter noise scaled by each tensor's RMS
    BasinCheck  schedule.restart_check_at (10.6)     a stuck seed leaves its batch; basin.py restarts it

A new intervention is one class with `after_round` and one line in `from_config`.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import agent, runlayout, schedules
from .config import Config
from .world_model import make_networks


class Event(NamedTuple):
    seed_index: int  # which seed of the batch
    name: str  # events.jsonl "event"
    fields: dict  # the rest of its record
    leave: Optional[dict] = None  # status fields to set when the seed leaves the batch; None: it stays


class RoundView(NamedTuple):
    """What an intervention sees after a round (arrays over the batch's seeds)."""

    prev_env_step: int
    env_step: int
    active: np.ndarray  # (S,) bool: seeds still training in this batch
    seeds: Sequence[int]
    attempts: Sequence[int]  # basin restarts already made per seed
    run_seeds: Sequence[int]  # the seed each run's current attempt uses
    last_row: dict  # the latest train.csv row, {column: (S,) values}; {} before the first


class Intervention(Protocol):
    def after_round(self, states, view: RoundView) -> tuple[object, list[Event]]: ...


def for_active(view: RoundView, name: str, **fields) -> list[Event]:
    return [Event(i, name, fields) for i in np.flatnonzero(view.active)]


class QReset:
    """schedule.q_reset_at: fresh Q heads drawn from each seed's key and the reset's index."""

    def __init__(self, cfg: Config, obs_dim: int, act_dim: int, world_tx):
        self.at = list(cfg.schedule.q_reset_at)

        def reset(states, index):
            def one(state):
                key = agent.stream(state.key, agent.INIT, schedules.Q_RESET_STREAM + index)
                fresh_world, _ = make_networks(cfg, obs_dim, act_dim, key)
                return schedules.q_reset(state, fresh_world.qs, world_tx)
            return jax.vmap(one)(states)

        self._reset = jax.jit(reset)

    def after_round(self, states, view: RoundView):
        events = []
        for index in schedules.crossed(self.at, view.prev_env_step, view.env_step):
            states = self._reset(states, jnp.int32(index))
            events += for_active(view, "q_reset", index=index, scheduled_at=self.at[index])
        return states, events


class Perturb:
    """schedule.perturb_at: Gaussian noise of perturb_scale x RMS on the chosen networks."""

    def __init__(self, cfg: Config):
        s = self.schedule = cfg.schedule

        def perturb(states, index):
            return jax.vmap(lambda state: schedules.perturb(
                state, s.perturb_scale, s.perturb_target,
                agent.stream(state.key, agent.INIT, schedules.PERTURB_STREAM + index)))(states)

        self._perturb = jax.jit(perturb)

    def after_round(self, states, view: RoundView):
        s, events = self.schedule, []
        for index in schedules.crossed(s.perturb_at, view.prev_env_step, view.env_step):
            states = self._perturb(states, jnp.int32(index))
            events += for_active(view, "perturb", index=index, scheduled_at=s.perturb_at[index],
                                 scale=s.perturb_scale, target=s.perturb_target)
        return states, events


class BasinCheck:
    """Research log 10.6: at schedule.restart_check_at, a seed with fewer active prototypes (its latest train.csv
    row) than restart_min_active leaves the batch as `restarting`; basin.train_with_restarts restarts it from
    scratch with a new exploration seed, seed + restart_seed_offset * attempt, while restarts remain (the
    log reseeds the exploration phase only: initialisation and planner noise keep their streams)."""

    def __init__(self, schedule, explore_seed=None):
        self.schedule, self.explore_seed = schedule, explore_seed  # streams.explore: None follows the run seed

    def after_round(self, states, view: RoundView):
        s, events = self.schedule, []
        if not schedules.crossed([s.restart_check_at], view.prev_env_step, view.env_step):
            return states, events
        column = view.last_row.get("active_prototypes")
        for i in np.flatnonzero(view.active):
            value = None if column is None or not np.isfinite(column[i]) else float(column[i])
            if value is not None and schedules.basin_restart_due(value, view.attempts[i], s):
                attempt = view.attempts[i] + 1
                base = view.seeds[i] if self.explore_seed is None else self.explore_seed
                new_seed = schedules.restart_seed(base, attempt, s)
                events.append(Event(i, "restart", dict(
                    attempt=attempt, active_prototypes=value, threshold=s.restart_min_active,
                    previous_seed=view.run_seeds[i], new_seed=new_seed,
                    message=f"{value:g} active prototypes < {s.restart_min_active}: restarting from scratch "
                            f"with seed {new_seed} (attempt {attempt} of at most {s.restart_max})"),
                    leave={"status": runlayout.RESTARTING, "attempt": attempt}))
            else:
                why = ("no active_prototypes in train.csv yet" if value is None else
                       "enough active prototypes" if value >= s.restart_min_active else "no restarts left")
                events.append(Event(i, "restart_check", dict(
                    active_prototypes=value, threshold=s.restart_min_active, attempt=view.attempts[i],
                    restart=False, message=why)))
        return states, events


def from_config(cfg: Config, obs_dim: int, act_dim: int, world_tx) -> list[Intervention]:
    """The interventions a config schedules, in the order they run after a round."""
    s, out = cfg.schedule, []
    if s.q_reset_at:
        out.append(QReset(cfg, obs_dim, act_dim, world_tx))
    if s.perturb_at:
        out.append(Perturb(cfg))
    if s.restart_check_at is not None:
        out.append(BasinCheck(cfg.schedule, cfg.streams.explore))
    return out
