"""Network building blocks (Equinox). Every layer accepts arbitrary leading batch axes.

TD-MPC2's block is NormedLinear: Linear -> (Dropout) -> LayerNorm -> activation, with weights drawn from a
normal of std 0.02 (truncated at +-2 absolute, as torch's trunc_normal_ does) and zero biases.
"""
from __future__ import annotations

import math
from typing import Optional

import equinox as eqx
import jax
import jax.numpy as jnp

INIT_STD = 0.02


def simnorm(x, group_size: int):
    """Softmax within consecutive groups of `group_size` entries of the last axis."""
    groups = x.reshape(*x.shape[:-1], -1, group_size)
    return jax.nn.softmax(groups, axis=-1).reshape(x.shape)


def _activation(name: str, x, simnorm_dim: int):
    if name == "mish":
        return jax.nn.mish(x)
    if name == "simnorm":
        return simnorm(x, simnorm_dim)
    if name == "none":
        return x
    raise ValueError(f"unknown activation {name!r}")


class Linear(eqx.Module):
    weight: jax.Array  # (out, in)
    bias: jax.Array  # (out,)

    def __init__(self, in_dim: int, out_dim: int, key, zero_init: bool = False):
        if zero_init:
            self.weight = jnp.zeros((out_dim, in_dim))
        else:
            self.weight = INIT_STD * jax.random.truncated_normal(key, -2 / INIT_STD, 2 / INIT_STD, (out_dim, in_dim))
        self.bias = jnp.zeros((out_dim,))

    def __call__(self, x):
        return x @ self.weight.T + self.bias


class LayerNorm(eqx.Module):
    scale: jax.Array
    offset: jax.Array
    eps: float = eqx.field(static=True, default=1e-5)

    def __init__(self, dim: int):
        self.scale = jnp.ones((dim,))
        self.offset = jnp.zeros((dim,))

    def __call__(self, x):
        mean = x.mean(-1, keepdims=True)
        var = jnp.square(x - mean).mean(-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + self.eps) * self.scale + self.offset


class NormedLinear(eqx.Module):
    linear: Linear
    norm: LayerNorm
    activation: str = eqx.field(static=True)
    dropout: float = eqx.field(static=True)
    simnorm_dim: int = eqx.field(static=True)

    def __init__(self, in_dim, out_dim, key, activation="mish", dropout=0.0, simnorm_dim=8):
        self.linear = Linear(in_dim, out_dim, key)
        self.norm = LayerNorm(out_dim)
        self.activation, self.dropout, self.simnorm_dim = activation, dropout, simnorm_dim

    def __call__(self, x, keep: Optional[jax.Array] = None):
        """keep: the dropout keep mask, shaped like the Linear's output (draws.Sample.q_dropout draws it); None
        means inference (no dropout)."""
        x = self.linear(x)
        if self.dropout > 0 and keep is not None:
            x = jnp.where(keep, x / (1.0 - self.dropout), 0.0)
        return _activation(self.activation, self.norm(x), self.simnorm_dim)


class MLP(eqx.Module):
    """(len(hidden)) NormedLinear(mish) layers, then either NormedLinear(out_activation) or a plain Linear.

    Dropout, when asked for, applies to the first layer only (TD-MPC2's placement).
    """

    hidden: tuple
    out: eqx.Module

    def __init__(self, in_dim, hidden_dims, out_dim, key, out_activation: Optional[str] = None,
                 dropout=0.0, simnorm_dim=8, zero_last=False):
        keys = jax.random.split(key, len(hidden_dims) + 1)
        dims = (in_dim, *hidden_dims)
        self.hidden = tuple(
            NormedLinear(dims[i], dims[i + 1], keys[i], dropout=dropout if i == 0 else 0.0, simnorm_dim=simnorm_dim)
            for i in range(len(hidden_dims))
        )
        if out_activation is None:
            self.out = Linear(dims[-1], out_dim, keys[-1], zero_init=zero_last)
        else:
            self.out = NormedLinear(dims[-1], out_dim, keys[-1], activation=out_activation, simnorm_dim=simnorm_dim)

    def __call__(self, x, keep: Optional[jax.Array] = None):
        """keep: the first layer's dropout keep mask (..., hidden_dims[0]), or None (no dropout)."""
        for layer in self.hidden:
            x = layer(x, keep)  # only the first layer has dropout > 0
        return self.out(x)


def num_params(tree) -> int:
    """Number of scalars in a module's arrays (works on eval_shape outputs too)."""
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree) if hasattr(x, "shape"))
