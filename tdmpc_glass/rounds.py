"""One agent step of training as one jitted call: add the step's rows to every seed's buffer, run the updates
due, plan the next actions.

What changes from call to call reaches it in two values:
- `RoundPlan` (static, hashable): how many updates, whether Glass trains, whether k-means seeds the prototypes,
  whether to plan. Each distinct plan is one compiled variant (a handful per run).
- `RoundInputs` (traced): the first update's index and the scheduled coefficients (agent.Coefs). Their values
  change every round without recompiling; a coefficient that is off for the whole run is None (no term in the
  graph). A new per-round coefficient is one more agent.Coefs field, computed in `plan_round` and read by the
  loss that uses it: the coefficients travel as one value down to the losses.
"""
from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import acting, agent, schedules
from . import buffer as replay
from .config import Config, Derived
from .flatstate import FlatState
from .planner import PlanSettings


class RoundPlan(NamedTuple):
    num_updates: int
    glass_on: bool  # False after glass.off_after: the update has no Glass term
    kmeans: bool  # at EXPL_UNTIL: prototypes from k-means of the buffer's latents, before the round's updates (10.7)
    act: bool = False  # plan the next step's actions after the updates (False while exploring)


class RoundInputs(NamedTuple):
    first_update: jax.Array  # () int32: index of the round's first update (its key stream)
    coefs: agent.Coefs = agent.NO_COEFS  # the round's scheduled coefficients, down to the losses


class Counters(NamedTuple):
    """The loop's step counters, checkpointed in every seed's meta (as a dict with these keys)."""

    tick: int = 0  # agent steps taken by each env
    updates: int = 0  # updates run per seed
    burst_done: bool = False  # the uniform-random phase has ended (and with it the burst of explore_updates burst)
    next_eval: int = 0  # env step of the next evaluation
    last_eval: int = -1  # env step of the last evaluation


def updates_due(d: Derived, env_step: int, burst_done: bool) -> int:
    """Updates of the round ending at env_step. train.explore_updates burst (TD-MPC2's): none while exploring,
    then the burst once, then K_UPDATE. steady (the research log's loop): none before the warm-up, then K_UPDATE
    every round, actions still random or not (its "burst", d.seed_updates, is one round's K_UPDATE)."""
    if env_step < d.update_warmup_env_steps:
        return 0
    if env_step < d.expl_until_env_steps or burst_done:  # before EXPL_UNTIL: steady mode only
        return d.k_update
    return d.seed_updates


def plan_round(cfg: Config, d: Derived, env_step: int, counters: Counters) -> tuple[RoundPlan, RoundInputs]:
    """The plan and inputs of the round that has just collected up to env_step (counters from before it)."""
    num_updates = updates_due(d, env_step, counters.burst_done)
    burst = not counters.burst_done and env_step >= d.expl_until_env_steps
    g = cfg.glass
    plan = RoundPlan(num_updates=num_updates,
                     glass_on=g.enabled and not (g.off_after is not None and env_step >= g.off_after),
                     kmeans=burst and g.enabled and g.kmeans_init)
    intrinsic = agent.intrinsic_coefficient(cfg, env_step)
    coefs = agent.Coefs(intrinsic=None if intrinsic is None else np.float32(intrinsic),
                        smooth=schedules.action_smooth_coef(cfg.schedule, env_step))
    inputs = RoundInputs(first_update=np.int32(counters.updates), coefs=coefs)
    return plan, inputs


def no_updates(counters: Counters) -> tuple[RoundPlan, RoundInputs]:
    """The plan and inputs of a call that runs no updates (a tick before the round's last, or the tick's call
    after overlapped updates)."""
    return RoundPlan(0, False, False), RoundInputs(np.int32(counters.updates))


def make_step(hyper: agent.Hyper, world_tx, policy_tx, settings: PlanSettings, use_planner: bool,
              on_trace=lambda: None):
    """The jitted agent step: f(states, rows, obs, prev_mean, tick, plan=RoundPlan, inputs=RoundInputs,
    noise_keys=None) -> (states, actions, prev_mean, ok, metrics).

    states: S seeds' AgentState as a FlatState (returned as one); rows: (obs, action, reward, pos) each
    (S, n, E, ...), the step's buffer rows, or None (a call that only updates: train.overlap_updates);
    obs (S, E, obs_dim) and prev_mean (S, E, H, A): what the next step plans from, tick its index. The updates
    (when plan.num_updates > 0) run after the rows are added, then the next actions are planned with the
    updated parameters: the order of two separate calls, in one. actions is None unless plan.act.
    ok (S,) bool: parameters and every metric finite (True without updates); metrics: the updates' means
    (S,) each, {} without updates; they stay on the device until a log row needs them.
    States and prev_mean are donated: nothing is copied whole. `on_trace` runs once per compiled variant."""
    def step_fn(flat: FlatState, rows, obs, prev_mean, tick, plan: RoundPlan, inputs: RoundInputs,
                noise_keys=None):
        on_trace()
        states = flat.tree()
        if rows is not None:
            states = eqx.tree_at(lambda s: s.buffer, states, jax.vmap(replay.add)(states.buffer, *rows))
        if plan.kmeans:  # once, when seeding ends: prototypes from the exploration data
            states = jax.vmap(lambda s: agent.kmeans_prototypes(s, agent.stream(s.key, agent.INIT, 1)))(states)
        metrics, ok = {}, jnp.ones(obs.shape[0], bool)
        if plan.num_updates:
            h = hyper if plan.glass_on else hyper._replace(glass=None)

            def run(state):
                return agent.run_updates(state, inputs.first_update, plan.num_updates, h, world_tx, policy_tx,
                                         inputs.coefs)

            states, metrics = jax.vmap(run)(states)
            ok = metrics.pop("params_finite")
            for value in metrics.values():
                ok = ok & jnp.isfinite(value)
        actions = None
        if plan.act:
            actions, prev_mean = acting.act(states, obs, prev_mean, tick, settings, False, use_planner, noise_keys)
        return FlatState.of(states), actions, prev_mean, ok, metrics

    return jax.jit(step_fn, static_argnames=("plan",), donate_argnums=(0, 3))
