"""Where the update and the planner draw random numbers: one object with a method per draw site.

The update (agent.world_loss / policy_loss), the Q heads (WorldModel.q_logits / q_value), the policy prior
(Policy.__call__) and the planner (planner.plan) take `draws=SAMPLE` and call its methods wherever they need
random numbers. `SAMPLE` makes exactly the jax.random calls these functions made before the seam existed, with
the same keys, so every result is bit-identical. `Replay` returns recorded arrays instead (site by site, in
call order) and ignores the keys: `check-official` drives our update and planner with the random draws the
official TD-MPC2 made (experiments/official_check.py), without a second copy of either.

Sites: policy_eps (the policy's N(0, 1) sample), q_pair (the 2 random Q heads), q_dropout (keep masks of the
first Q layer of the given heads), mppi_noise (the planner's sampling noise), gumbel (the elite choice),
explore_noise (noise added to the executed action in training). `scan` runs the planner's MPPI iterations
(lax.scan); inside it a Replay hands iteration j the j-th of the next n recorded draws of each site.
"""
from __future__ import annotations

from collections import defaultdict

import jax
import jax.numpy as jnp


class Sample:
    """Draw with jax.random from the given keys (the default everywhere)."""

    def policy_eps(self, key, shape):
        return jax.random.normal(key, shape)

    def q_pair(self, key, num_q: int):
        """Indices (2,) of two distinct heads of num_q."""
        return jax.random.choice(key, num_q, (2,), replace=False)

    def q_dropout(self, key, heads, shape, rate: float):
        """Keep masks (len(heads), *shape) of the first layer of the Q heads `heads` (indices into the ensemble;
        a head's mask never depends on which index it has: one key per listed head)."""
        keys = jax.random.split(key, len(heads))
        return jax.vmap(lambda k: jax.random.bernoulli(k, 1.0 - rate, shape))(keys)

    def mppi_noise(self, key, shape):
        return jax.random.normal(key, shape)

    def gumbel(self, key, shape):
        return jax.random.gumbel(key, shape)

    def explore_noise(self, key, shape):
        return jax.random.normal(key, shape)

    def scan(self, body, init, xs):
        return jax.lax.scan(body, init, xs)


SAMPLE = Sample()


class ReplayError(ValueError):
    """The code asked for a draw the recording does not have (or of another shape)."""


class Replay(Sample):
    """Recorded draws by site, handed out in call order; keys are ignored. Not for jit across calls: each call
    of a site takes the next recorded array (inside a jit the draws are taken once, at trace time).

    recorded: {site: [array, ...]}. For q_dropout an array holds the masks of EVERY head (num_q, *shape) and a
    call gets the rows of the heads it asks for (the official code draws all heads' masks, then picks two).
    For gumbel the recording may hold Exponential(1) samples x under `exponential`: gumbel = -log(x)."""

    def __init__(self, recorded: dict):
        self.queues = defaultdict(list, {site: list(arrays) for site, arrays in recorded.items()})
        self.iteration = None  # inside scan: (traced iteration index, number of iterations)

    def _next(self, site: str, shape=None):
        count = 1 if self.iteration is None else self.iteration[1]
        if len(self.queues[site]) < count:
            raise ReplayError(f"no recorded draw left for site {site}")
        taken, self.queues[site] = self.queues[site][:count], self.queues[site][count:]
        if self.iteration is None:
            value = jnp.asarray(taken[0])
        else:  # one draw per iteration: the stack indexed by the (traced) iteration
            value = jnp.stack([jnp.asarray(x) for x in taken])[self.iteration[0]]
        if shape is not None and tuple(value.shape) != tuple(shape):
            raise ReplayError(f"site {site}: recorded shape {tuple(value.shape)}, the code draws {tuple(shape)}")
        return value

    def left(self) -> dict:
        """Draws not used (site -> count): empty when the code consumed exactly what was recorded."""
        return {site: len(q) for site, q in self.queues.items() if q}

    def policy_eps(self, key, shape):
        return self._next("policy_eps", shape)

    def q_pair(self, key, num_q: int):
        return self._next("q_pair")[:2].astype(jnp.int32)

    def q_dropout(self, key, heads, shape, rate: float):
        return self._next("q_dropout")[jnp.asarray(heads)].astype(bool).reshape((len(heads), *shape))

    def mppi_noise(self, key, shape):
        return self._next("mppi_noise", shape)

    def gumbel(self, key, shape):
        if self.queues["exponential"]:
            return -jnp.log(self._next("exponential", shape))
        return self._next("gumbel", shape)

    def explore_noise(self, key, shape):
        return self._next("explore_noise", shape)

    def scan(self, body, init, xs):
        n = len(xs)

        def step(carry, x):
            outer, self.iteration = self.iteration, (x[1], n)
            try:
                return body(carry, x[0])
            finally:
                self.iteration = outer

        return jax.lax.scan(step, init, (xs, jnp.arange(n)))
