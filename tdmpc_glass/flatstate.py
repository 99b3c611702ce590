"""The batch's agent state as it crosses the loop's jitted calls: a flat tuple of arrays.

A jitted call flattens its arguments on every call. An AgentState is a nest of equinox Modules whose
flattening runs Python for every node: for the demo's 169 arrays that is 0.6 ms of a 0.8 ms call on a 2-core
CPU, paid at every agent step. A tuple of arrays is flattened in C++ (0.2 ms), so the loop keeps the state as
a `FlatState` between calls and rebuilds the Modules only inside traced code (`tree()`, free there) or when
something outside the per-step path reads them (evaluation, checkpoints, interventions, videos).
"""
from __future__ import annotations

import jax


@jax.tree_util.register_pytree_node_class
class FlatState:
    """`leaves` in the order of jax.tree.leaves(tree); `treedef` rebuilds the tree."""

    def __init__(self, leaves: tuple, treedef):
        self.leaves, self.treedef = tuple(leaves), treedef

    @classmethod
    def of(cls, tree) -> "FlatState":
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        return cls(leaves, treedef)

    def tree(self):
        return jax.tree_util.tree_unflatten(self.treedef, self.leaves)

    # one pytree node whose children are a tuple of arrays: jax flattens it without walking the Modules
    def tree_flatten(self):
        return (self.leaves,), self.treedef

    @classmethod
    def tree_unflatten(cls, treedef, children):
        return cls(children[0], treedef)


def as_tree(states):
    """The AgentState of `states`, whether flat or already a tree."""
    return states.tree() if isinstance(states, FlatState) else states
