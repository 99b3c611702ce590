"""Scalar transforms and distributional-regression helpers (TD-MPC2 conventions).

Rewards and values are regressed as two-hot distributions over `num_bins` bins spanning [vmin, vmax] in
symlog space; decoding is the softmax expectation over bin centres followed by symexp.
"""
import jax
import jax.numpy as jnp


def symlog(x):
    return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def symexp(x):
    return jnp.sign(x) * jnp.expm1(jnp.abs(x))


def bin_centres(num_bins: int, vmin: float, vmax: float):
    return jnp.linspace(vmin, vmax, num_bins)


def two_hot(x, num_bins: int, vmin: float, vmax: float):
    """Encode raw values (...,) as two-hot targets (..., num_bins) over symlog-space bins.

    symlog(x) is clipped to [vmin, vmax]; the mass splits linearly between the two neighbouring bin centres,
    so a value exactly on a centre is one-hot and `two_hot_inv(log(two_hot(x)))` recovers x.
    """
    bin_size = (vmax - vmin) / (num_bins - 1)
    y = jnp.clip(symlog(x), vmin, vmax)
    pos = (y - vmin) / bin_size
    low = jnp.clip(jnp.floor(pos), 0, num_bins - 2)  # keep low+1 in range; at vmax the weight lands on the top bin
    upper_weight = pos - low
    low = low.astype(jnp.int32)
    return (jax.nn.one_hot(low, num_bins) * (1.0 - upper_weight)[..., None]
            + jax.nn.one_hot(low + 1, num_bins) * upper_weight[..., None])


def two_hot_inv(logits, num_bins: int, vmin: float, vmax: float):
    """Decode logits (..., num_bins) to raw values (...,): symexp of the expected bin centre."""
    probs = jax.nn.softmax(logits, axis=-1)
    return symexp(probs @ bin_centres(num_bins, vmin, vmax))


def soft_ce(logits, x, num_bins: int, vmin: float, vmax: float):
    """Cross-entropy (...,) between predicted logits (..., num_bins) and the two-hot encoding of raw x (...,)."""
    return -jnp.sum(two_hot(x, num_bins, vmin, vmax) * jax.nn.log_softmax(logits, axis=-1), axis=-1)


def gaussian_logprob(eps, log_std):
    """Log density of a diagonal Gaussian sample mu + exp(log_std) * eps, summed over the last axis."""
    return jnp.sum(-0.5 * eps ** 2 - log_std, axis=-1) - 0.5 * jnp.log(2 * jnp.pi) * eps.shape[-1]


def gumbel_categorical(key, log_weights, axis: int = -1, gumbel=jax.random.gumbel):
    """Index drawn with probability proportional to exp(log_weights) (Gumbel-max trick); gumbel(key, shape) draws
    the standard Gumbel noise (draws.Sample.gumbel)."""
    return jnp.argmax(log_weights + gumbel(key, log_weights.shape), axis=axis)
