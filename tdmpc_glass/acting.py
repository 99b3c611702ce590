"""The one act function: what S seeds x E envs do at an agent step, in training, evaluation and rollouts.

`act` is pure (jit it with eval_mode and use_planner static); the trainer, its evaluation and the video
rollouts all call it, so a video shows exactly the policy that was evaluated.
"""
from __future__ import annotations

import jax

from . import agent
from .planner import PlanSettings, plan_batch, policy_act_batch


def act(states: agent.AgentState, obs, prev_mean, counter, settings: PlanSettings, eval_mode: bool,
        use_planner: bool, noise_keys=None):
    """obs (S, E, obs_dim), prev_mean (S, E, H, A) the previous MPPI means, counter the caller's step index
    (drawn into each seed's ACT or EVAL key stream) -> actions (S, E, A) in [-1, 1], the new prev_mean.

    use_planner: MPPI; else the policy prior (its mean in eval mode, a sample otherwise).
    noise_keys: (S, 2) base keys of the acting noise (streams.planner); None: each seed's own key."""
    purpose = agent.EVAL if eval_mode else agent.ACT
    base = states.key if noise_keys is None else noise_keys
    keys = jax.vmap(lambda k: jax.random.split(agent.stream(k, purpose, counter), obs.shape[1]))(base)
    if use_planner:
        return plan_batch(states.world, states.policy, obs, prev_mean, keys, settings, eval_mode)
    return policy_act_batch(states.policy, states.world, obs, keys, eval_mode), prev_mean


def jit_act(settings: PlanSettings):
    """act with `settings` bound, jitted: f(states, obs, prev_mean, counter, eval_mode=, use_planner=)."""
    def bound(states, obs, prev_mean, counter, eval_mode: bool, use_planner: bool):
        return act(states, obs, prev_mean, counter, settings, eval_mode, use_planner)

    return jax.jit(bound, static_argnames=("eval_mode", "use_planner"))
