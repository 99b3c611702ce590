"""Glass math: structural entropy against loop references, invariances, graph construction, losses, k-means."""
import dataclasses
import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tdmpc_glass import glass as g

jax.config.update("jax_enable_x64", False)


# ----------------------------------------------------------------------------------------------- references
# Written with explicit Python loops over clusters and nodes, in float64, independent of the module.

def random_graph(rng, n, self_loops=True, zero_nodes=()):
    a = rng.uniform(0.0, 1.0, (n, n)) * (rng.uniform(size=(n, n)) < 0.6)
    a = 0.5 * (a + a.T)
    if not self_loops:
        np.fill_diagonal(a, 0.0)
    for i in zero_nodes:
        a[i, :] = 0.0
        a[:, i] = 0.0
    return a


def random_soft_s(rng, n, k, temp=1.0):
    logits = rng.normal(size=(n, k)) / temp
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def random_hard_s(rng, n, k):
    return np.eye(k)[rng.integers(0, k, n)]


def ref_parts(a, s):
    """Degrees, vol, soft volumes V_k and soft cuts g_k = sum_i sum_j S_ik A_ij (1 - S_jk), by loops."""
    n, k = s.shape
    d = [sum(a[i, j] for j in range(n)) for i in range(n)]
    vol = sum(d)
    vols, cuts = [], []
    for c in range(k):
        vols.append(sum(s[i, c] * d[i] for i in range(n)))
        cuts.append(sum(s[i, c] * a[i, j] * (1.0 - s[j, c]) for i in range(n) for j in range(n)))
    return d, vol, vols, cuts


def xlog(x, y):
    """x * log(y) with 0 log 0 = 0."""
    return 0.0 if x == 0.0 else x * math.log(y)


def ref_h1(a):
    d, vol, _, _ = ref_parts(a, np.ones((a.shape[0], 1)))
    return -sum(xlog(di / vol, di / vol) for di in d)


def ref_se_textbook(a, s):
    """Cut form: -sum_k (g_k/vol) log(V_k/vol) - sum_k sum_i S_ik (d_i/vol) log(d_i/V_k)."""
    d, vol, vols, cuts = ref_parts(a, s)
    n, k = s.shape
    total = 0.0
    for c in range(k):
        total -= xlog(cuts[c] / vol, vols[c] / vol)
        for i in range(n):
            if s[i, c] > 0 and d[i] > 0:
                total -= s[i, c] * (d[i] / vol) * math.log(d[i] / vols[c])
    return total


def ref_se_hard_literal(a, labels, k):
    """Hard partition, cut counted literally as the weight of edges leaving each cluster's node set."""
    n = len(labels)
    d = [sum(a[i, j] for j in range(n)) for i in range(n)]
    vol = sum(d)
    total = 0.0
    for c in range(k):
        members = [i for i in range(n) if labels[i] == c]
        v = sum(d[i] for i in members)
        cut = sum(a[i, j] for i in members for j in range(n) if labels[j] != c)
        total -= xlog(cut / vol, v / vol)
        for i in members:
            total -= xlog(d[i] / vol, d[i] / v)
    return total


def ref_resistance(a, s):
    _, vol, vols, cuts = ref_parts(a, s)
    return sum(xlog((vols[c] - cuts[c]) / vol, vol / vols[c]) for c in range(s.shape[1]) if vols[c] > 0)


def ref_se_h1_minus_r(a, s):
    return ref_h1(a) - ref_resistance(a, s)


def ref_se_seed_form(a, s):
    """The seed document's form: -sum_k p_cut,k log p_vol,k + H1 + sum_k p_vol,k log p_vol,k."""
    _, vol, vols, cuts = ref_parts(a, s)
    total = ref_h1(a)
    for c in range(s.shape[1]):
        p_cut, p_vol = cuts[c] / vol, vols[c] / vol
        total += -xlog(p_cut, p_vol) + xlog(p_vol, p_vol)
    return total


def ref_hier_hard(a, labels, super_of):
    """Three-level tree: -sum_{alpha != root} (g_alpha/vol) log(V_alpha/V_parent), literal cuts, leaf cut d_i."""
    n = len(labels)
    d = [sum(a[i, j] for j in range(n)) for i in range(n)]
    vol = sum(d)

    def volume(nodes):
        return sum(d[i] for i in nodes)

    def cut(nodes):
        inside = set(nodes)
        return sum(a[i, j] for i in nodes for j in range(n) if j not in inside)

    total = 0.0
    for m in sorted(set(super_of)):
        sup_nodes = [i for i in range(n) if super_of[labels[i]] == m]
        total -= xlog(cut(sup_nodes) / vol, volume(sup_nodes) / vol)
        for c in sorted({labels[i] for i in sup_nodes}):
            nodes = [i for i in range(n) if labels[i] == c]
            total -= xlog(cut(nodes) / vol, volume(nodes) / volume(sup_nodes))
            for i in nodes:
                total -= xlog(d[i] / vol, d[i] / volume(nodes))
    return total


def ref_hier_soft(a, s, s_sup):
    """Soft three-level form by loops (leaf and cluster parent volumes weighted by the soft memberships)."""
    n, k = s.shape
    m_count = s_sup.shape[1]
    t = np.zeros((n, m_count))
    for i in range(n):
        for m in range(m_count):
            t[i, m] = sum(s[i, c] * s_sup[c, m] for c in range(k))
    d, vol, vols, cuts = ref_parts(a, s)
    _, _, uvols, ucuts = ref_parts(a, t)
    total = 0.0
    for m in range(m_count):
        if uvols[m] > 0:
            total -= xlog(ucuts[m] / vol, uvols[m] / vol)
    for c in range(k):
        for m in range(m_count):
            if s_sup[c, m] > 0 and vols[c] > 0:
                total -= s_sup[c, m] * xlog(cuts[c] / vol, vols[c] / uvols[m])
    for c in range(k):
        for i in range(n):
            if s[i, c] > 0:
                total -= s[i, c] * xlog(d[i] / vol, d[i] / vols[c])
    return total


# jitted once per shape and shared by the tests (op-by-op dispatch would compile every primitive separately)
se_jit = jax.jit(g.structural_entropy)
h1_jit = jax.jit(g.one_dim_entropy)
resistance_jit = jax.jit(g.resistance)
hier_jit = jax.jit(g.hierarchical_structural_entropy)
graph_jit = jax.jit(g.transition_graph, static_argnames=("kind", "eps", "flow_iters", "self_loops"))
window_jit = jax.jit(g.window_consistency_loss, static_argnums=1)


def f32(x):
    return jnp.asarray(x, jnp.float32)


def se(a, s):
    return float(se_jit(f32(a), f32(s)))


# ----------------------------------------------------------------------------------------------- structural entropy
@pytest.mark.parametrize("hard", [True, False])
def test_se_matches_loop_reference_and_three_forms(hard):
    rng = np.random.default_rng(0)
    for n, k in [(5, 2), (9, 3), (11, 5)] * 2:
        a = random_graph(rng, n)
        s = random_hard_s(rng, n, k) if hard else random_soft_s(rng, n, k)
        textbook = ref_se_textbook(a, s)
        assert ref_se_h1_minus_r(a, s) == pytest.approx(textbook, abs=1e-10)
        assert ref_se_seed_form(a, s) == pytest.approx(textbook, abs=1e-10)
        if hard:
            labels = s.argmax(1)
            assert ref_se_hard_literal(a, labels, k) == pytest.approx(textbook, abs=1e-10)
        assert se(a, s) == pytest.approx(textbook, abs=2e-5)
        h1, r = float(h1_jit(f32(a))), float(resistance_jit(f32(a), f32(s)))
        assert h1 == pytest.approx(ref_h1(a), abs=2e-5)
        assert r == pytest.approx(ref_resistance(a, s), abs=2e-5)
        assert h1 - r == pytest.approx(textbook, abs=2e-5)


def test_se_textbook_value_on_two_triangles():
    # two triangles joined by one edge of weight 1, unit weights: a hand-checkable case
    a = np.zeros((6, 6))
    for i, j in [(0, 1), (1, 2), (0, 2), (3, 4), (4, 5), (3, 5), (2, 3)]:
        a[i, j] = a[j, i] = 1.0
    s = np.eye(2)[[0, 0, 0, 1, 1, 1]]
    # d = (2,2,3,3,2,2), vol = 14, V = (7,7), g = (1,1)
    expected = -2 * (1 / 14) * math.log(7 / 14) - 2 * (2 * (2 / 14) * math.log(2 / 7) + (3 / 14) * math.log(3 / 7))
    assert se(a, s) == pytest.approx(expected, abs=1e-5)


def test_se_permutation_invariance():
    rng = np.random.default_rng(1)
    n, k = 9, 4
    a = random_graph(rng, n)
    for s in (random_hard_s(rng, n, k), random_soft_s(rng, n, k)):
        base = se(a, s)
        perm = rng.permutation(n)
        assert se(a[np.ix_(perm, perm)], s[perm]) == pytest.approx(base, abs=1e-5)
        cperm = rng.permutation(k)
        assert se(a, s[:, cperm]) == pytest.approx(base, abs=1e-5)


def test_one_cluster_gives_h1_and_is_the_worst():
    rng = np.random.default_rng(2)
    a = random_graph(rng, 8)
    h1 = float(g.one_dim_entropy(jnp.asarray(a, jnp.float32)))
    assert se(a, np.ones((8, 1))) == pytest.approx(h1, abs=1e-5)
    assert float(g.resistance(jnp.asarray(a, jnp.float32), jnp.ones((8, 1)))) == pytest.approx(0.0, abs=1e-6)
    for _ in range(5):
        assert se(a, random_soft_s(rng, 8, 3)) <= h1 + 1e-6


def test_uniform_soft_s_gives_h1_minus_log_k_over_k():
    # uniform S: V_k = vol/K, internal mass vol/K^2, so R = log(K)/K (the leaf term alone is H1 - log K)
    rng = np.random.default_rng(3)
    a = random_graph(rng, 10)
    h1 = float(g.one_dim_entropy(jnp.asarray(a, jnp.float32)))
    assert se(a, np.full((10, 4), 0.25)) == pytest.approx(h1 - math.log(4) / 4, abs=1e-5)


def test_block_diagonal_true_partition_beats_random_partitions():
    rng = np.random.default_rng(4)
    sizes, n = (4, 5, 3), 12
    labels = np.repeat(np.arange(3), sizes)
    a = np.full((n, n), 0.01)
    for b in range(3):
        idx = np.where(labels == b)[0]
        block = rng.uniform(1.0, 2.0, (len(idx), len(idx)))
        a[np.ix_(idx, idx)] = 0.5 * (block + block.T)
    true_se = se(a, np.eye(3)[labels])

    def canonical(lab):
        seen = {}
        return tuple(seen.setdefault(x, len(seen)) for x in lab)

    compared = 0
    for _ in range(300):
        lab = rng.integers(0, 3, n)
        if canonical(lab) == canonical(labels):
            continue
        assert se(a, np.eye(3)[lab]) > true_se
        compared += 1
    assert compared > 250


def test_finite_values_and_gradients_at_empty_cluster_and_unvisited_node():
    rng = np.random.default_rng(5)
    a = f32(random_graph(rng, 6, zero_nodes=(2,)))  # node 2 never visited: d_2 = 0
    s_hard = f32(np.eye(4)[[0, 0, 1, 1, 3, 3]])  # cluster 2 empty
    logits = jnp.log(s_hard + 1e-30)  # softmax gives exact zeros in float32
    s_super = f32(np.eye(2)[[0, 0, 1, 1]])

    @jax.jit
    def values_and_grads(a, logits):
        def all_terms(a, logits):
            s = g.cluster_matrix(logits)
            terms = jnp.stack([g.structural_entropy(a, s), g.resistance(a, s), g.one_dim_entropy(a),
                               g.hierarchical_structural_entropy(a, s, s_super)])
            return terms.sum(), terms
        return jax.grad(all_terms, argnums=(0, 1), has_aux=True)(a, logits)

    for graph in (a, jnp.zeros((6, 6))):  # an all-zero graph is finite too
        (ga, gl), terms = values_and_grads(graph, logits)
        for x in (ga, gl, terms):
            assert np.all(np.isfinite(np.asarray(x)))
    # the zero-degree node and the empty cluster contribute nothing: same value as without them
    keep = [0, 1, 3, 4, 5]
    assert se(a, s_hard) == pytest.approx(se(np.asarray(a)[np.ix_(keep, keep)], np.asarray(s_hard)[keep][:, [0, 1, 3]]),
                                          abs=1e-6)


@pytest.mark.parametrize("hard", [True, False])
def test_hierarchical_matches_reference_and_reduces_to_two_levels(hard):
    rng = np.random.default_rng(6)
    n, k, m = 10, 4, 2
    for _ in range(3):
        a = random_graph(rng, n)
        if hard:
            labels = rng.integers(0, k, n)
            super_of = rng.integers(0, m, k)
            s, s_sup = np.eye(k)[labels], np.eye(m)[super_of]
            ref = ref_hier_hard(a, labels, super_of)
            assert ref_hier_soft(a, s, s_sup) == pytest.approx(ref, abs=1e-10)
        else:
            s, s_sup = random_soft_s(rng, n, k), random_soft_s(rng, k, m)
            ref = ref_hier_soft(a, s, s_sup)
        assert float(hier_jit(f32(a), f32(s), f32(s_sup))) == pytest.approx(ref, abs=3e-5)
        two = se(a, s)
        assert float(hier_jit(f32(a), f32(s), jnp.ones((k, 1)))) == pytest.approx(two, abs=2e-5)
        assert float(hier_jit(f32(a), f32(s), jnp.eye(k))) == pytest.approx(two, abs=2e-5)


# ----------------------------------------------------------------------------------------------- graph
def one_hot_pairs(pairs, n):
    src = jnp.asarray(np.eye(n)[[p[0] for p in pairs]], jnp.float32)
    dst = jnp.asarray(np.eye(n)[[p[1] for p in pairs]], jnp.float32)
    return src, dst


def test_transition_graph_hand_built():
    # 0->1 twice, 1->2, 2->0: row mass (2,1,1)/4, column mass (1,2,1)/4, P a pure 3-cycle with uniform pi
    c, cn = one_hot_pairs([(0, 1), (0, 1), (1, 2), (2, 0)], 3)
    rown = np.asarray(g.transition_graph(c, cn, "rownorm_sym", eps=0.0))
    np.testing.assert_allclose(rown, np.array([[0, .5, .5], [.5, 0, .5], [.5, .5, 0]]), atol=1e-6)
    counts = np.asarray(g.transition_graph(c, cn, "counts_sym", eps=0.0))
    np.testing.assert_allclose(counts, np.array([[0, .25, .125], [.25, 0, .125], [.125, .125, 0]]), atol=1e-6)
    flow = np.asarray(g.transition_graph(c, cn, "flow", eps=0.0))
    np.testing.assert_allclose(flow, (np.ones((3, 3)) - np.eye(3)) / 6, atol=1e-6)
    flow0 = np.asarray(g.transition_graph(c, cn, "flow", eps=0.0, flow_iters=0))
    np.testing.assert_allclose(flow0, counts, atol=1e-6)  # row-mass weighting is the counts graph


def test_transition_graph_self_loops_convention():
    c, cn = one_hot_pairs([(0, 0), (0, 0), (0, 1), (1, 0)], 2)
    with_loops = np.asarray(g.transition_graph(c, cn, "counts_sym", eps=0.0))
    np.testing.assert_allclose(with_loops, np.array([[.5, .25], [.25, 0]]), atol=1e-6)
    without = np.asarray(g.transition_graph(c, cn, "counts_sym", eps=0.0, self_loops=False))
    np.testing.assert_allclose(without, np.array([[0, .5], [.5, 0]]), atol=1e-6)


@pytest.mark.parametrize("kind,mass", [("rownorm_sym", None), ("counts_sym", 1.0), ("flow", 1.0)])
def test_transition_graph_symmetric_with_expected_mass(kind, mass):
    n = 7
    c = f32(random_soft_s(np.random.default_rng(10), 120, n, temp=0.3).reshape(3, 40, n))  # (T, B, N) sequences
    a = np.asarray(graph_jit(c[:-1], c[1:], kind=kind))
    np.testing.assert_allclose(a, a.T, atol=1e-7)
    assert np.all(a > 0)
    np.testing.assert_allclose(a.sum(), n if mass is None else mass, rtol=1e-5)
    if kind == "rownorm_sym":
        p = np.einsum("tbi,tbj->ij", np.asarray(c[:-1], np.float64), np.asarray(c[1:], np.float64)) + 1e-6
        np.testing.assert_allclose(a, 0.5 * (p / p.sum(1, keepdims=True) + (p / p.sum(1, keepdims=True)).T),
                                   rtol=1e-5)
    if kind == "flow":
        p = np.einsum("tbi,tbj->ij", np.asarray(c[:-1], np.float64), np.asarray(c[1:], np.float64)) + 1e-6
        p = p / p.sum(1, keepdims=True)
        d = a.sum(1)
        np.testing.assert_allclose(d @ p, d, atol=1e-5)  # degrees are the stationary distribution


# ----------------------------------------------------------------------------------------------- labels
def test_k_label_and_nearest_anchor_hand_built():
    mu = jnp.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 0]])
    s = jnp.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    z = jnp.array([[5.0, 0.1, 0.2], [0.1, 2.0, 0.0], [0.0, 0.1, 0.3], [3.0, 3.2, 0.0], [0.0, 0.0, 0.0]])
    # cosines: z0 nearest mu0, z1 mu1, z2 mu2, z3 mu3 (cos ~1), z4 (zero vector) ties at 0 -> argmax index 0

    @jax.jit
    def run(z, mu, s):
        return g.nearest_anchor(z, mu), g.k_label(z, mu, s), g.cosine_similarity(z, mu)

    nearest, labels, cos = run(z, mu, s)
    np.testing.assert_array_equal(np.asarray(nearest), [0, 1, 2, 3, 0])
    assert labels.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(labels), [1, 0, 1, 0, 1])
    np.testing.assert_allclose(np.asarray(cos)[3, 3], 1.0, atol=2e-3)
    np.testing.assert_allclose(np.asarray(cos)[4], 0.0)
    # arbitrary leading axes, and a leading seed axis under vmap (seed 1 swaps the two clusters)
    labels_v = jax.jit(jax.vmap(g.k_label, in_axes=(None, 0, 0)))(z.reshape(5, 1, 3), jnp.stack([mu, mu]),
                                                                  jnp.stack([s, s[:, ::-1]]))
    assert labels_v.shape == (2, 5, 1)
    np.testing.assert_array_equal(np.asarray(labels_v[:, :, 0]), [[1, 0, 1, 0, 1], [0, 1, 0, 1, 0]])


def test_soft_assignment_and_cluster_matrix_rows_on_simplex():
    rng = np.random.default_rng(11)
    z, mu = f32(rng.normal(size=(5, 3, 8))), f32(rng.normal(size=(6, 8)))
    assign = jax.jit(g.soft_assignment)
    c = assign(z, mu, 0.2)
    assert c.shape == (5, 3, 6)
    np.testing.assert_allclose(np.asarray(c.sum(-1)), 1.0, rtol=1e-6)
    assert float(c.max()) > float(assign(z, mu, 2.0).max())  # lower temperature, sharper
    s = jax.jit(g.cluster_matrix)(f32(rng.normal(size=(6, 4))))
    np.testing.assert_allclose(np.asarray(s.sum(1)), 1.0, rtol=1e-6)


def test_switch_rate_and_active_counts():
    labels = jnp.array([[0, 1], [0, 2], [1, 2], [1, 2]])  # (T=4, B=2): changes 0,1 | 1,0 | 0,0
    assert float(g.k_switch_rate(labels)) == pytest.approx(2 / 6)
    c = jnp.array([[0.5, 0.5, 0.0, 0.0], [0.5, 0.4, 0.1, 0.0]])  # mean (0.5, 0.45, 0.05, 0): threshold 1/8
    assert int(g.active_prototypes(c)) == 2
    assert int(g.active_prototypes(c, threshold=0.01)) == 3
    s = jnp.array([[1.0, 0], [1.0, 0], [0, 1.0], [0, 1.0]])
    assert int(g.active_clusters(c, s)) == 1  # usage (0.95, 0.05), threshold 1/4


# ----------------------------------------------------------------------------------------------- losses
def test_balance_losses_zero_at_uniform_and_positive_when_collapsed():
    n, k = 6, 3
    uniform_c = jnp.full((10, n), 1 / n)
    s = jnp.asarray(np.eye(k)[[0, 0, 1, 1, 2, 2]], jnp.float32)
    assert float(g.prototype_balance_loss(uniform_c)) == pytest.approx(0.0, abs=1e-6)
    assert float(g.cluster_balance_loss(uniform_c, s)) == pytest.approx(0.0, abs=1e-6)
    collapsed = jnp.asarray(np.eye(n)[np.zeros(10, int)], jnp.float32)
    assert float(g.prototype_balance_loss(collapsed)) == pytest.approx(math.log(n), abs=1e-5)
    assert float(g.cluster_balance_loss(collapsed, s)) == pytest.approx(math.log(k), abs=1e-5)
    assert float(g.row_entropy_loss(s)) == pytest.approx(0.0, abs=1e-6)
    assert float(g.row_entropy_loss(jnp.full((n, k), 1 / k))) == pytest.approx(math.log(k), abs=1e-5)


def test_temporal_loss_value():
    z = jnp.array([[0.0, 0.0], [1.0, 1.0]])
    zn = jnp.array([[1.0, 0.0], [1.0, 3.0]])
    assert float(g.temporal_loss(z, zn)) == pytest.approx((1.0 + 4.0) / 2)


def test_window_loss_zero_for_constant_and_positive_for_switching():
    rng = np.random.default_rng(7)
    base = random_soft_s(rng, 3, 5)  # (B=3, N=5): every sequence keeps its own assignment
    constant = jnp.asarray(np.broadcast_to(base, (8, 3, 5)), jnp.float32)
    assert float(window_jit(constant, 4)) == pytest.approx(0.0, abs=1e-6)
    switching = jnp.asarray(np.eye(5)[np.tile([0, 1], 4)][:, None, :].repeat(3, 1), jnp.float32)  # 0,1,0,1,...
    assert float(window_jit(switching, 2)) == pytest.approx(math.log(2), abs=1e-5)
    soft_switch = f32(random_soft_s(rng, 24, 5, temp=0.3).reshape(8, 3, 5))
    assert float(window_jit(soft_switch, 3)) > 0.01
    assert float(jax.jit(g.window_mutual_information, static_argnums=1)(soft_switch, 3)) == pytest.approx(
        float(window_jit(soft_switch, 3)))
    with pytest.raises(ValueError):
        g.window_consistency_loss(constant, 9)


def test_phase_contrastive_lower_when_positives_match():
    labels = jnp.array([0, 0, 0, 1, 1, 1, 0, 1])
    aligned = jnp.asarray(np.eye(4)[[0, 0, 0, 2, 2, 2, 0, 2]] * 0.9 + 0.025, jnp.float32)
    crossed = jnp.asarray(np.eye(4)[[0, 2, 0, 2, 0, 2, 0, 2]] * 0.9 + 0.025, jnp.float32)
    contrast = jax.jit(g.phase_contrastive_loss)
    loss_aligned = float(contrast(aligned, labels))
    loss_crossed = float(contrast(crossed, labels))
    assert loss_aligned < loss_crossed
    assert loss_aligned < 1e-3  # positives identical, negatives orthogonal-ish: near zero at tau 0.1
    # bool labels, and no negatives at all: finite (zero)
    assert float(contrast(aligned, labels.astype(bool))) == pytest.approx(loss_aligned)
    same = contrast(aligned, jnp.zeros(8, jnp.int32))
    assert float(same) == pytest.approx(0.0, abs=1e-6)
    gr = jax.jit(jax.grad(g.phase_contrastive_loss))(crossed, labels)
    assert np.all(np.isfinite(np.asarray(gr)))


def test_sinkhorn_targets_near_equipartition():
    rng = np.random.default_rng(12)
    b, n = 256, 8
    # cosine-like scores skewed towards the first prototypes: plain softmax usage is far from uniform
    scores = f32(np.clip(rng.normal(size=(b, n)) * 0.1 + np.linspace(0.1, -0.1, n), -1.0, 1.0))

    @jax.jit
    def run(scores):
        q3, q10 = g.sinkhorn_targets(scores, 0.05, 3), g.sinkhorn_targets(scores, 0.05, 10)
        grad = jax.grad(lambda x: jnp.sum(g.sinkhorn_targets(x) * jnp.arange(n)))(scores)
        swap, swap_grad = jax.value_and_grad(g.swapped_prediction_loss)(scores, scores[::-1])
        return q3, q10, grad, swap, swap_grad

    q, q10, grad, swap, swap_grad = (np.asarray(x) for x in run(scores))
    np.testing.assert_allclose(q.sum(1), 1.0, rtol=1e-5)
    x = np.asarray(scores, np.float64) / 0.05
    plain = (np.exp(x - x.max(1, keepdims=True)) / np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True)).mean(0)
    assert np.abs(plain - 1 / n).max() > 0.15
    assert np.abs(q.sum(0) / b - 1 / n).max() < 0.02
    assert np.abs(q10.sum(0) / b - 1 / n).max() < 1e-3  # converges with more iterations
    assert np.abs(grad).sum() == 0.0  # no gradient reaches the scores through the targets
    assert np.isfinite(swap) and np.all(np.isfinite(swap_grad)) and np.abs(swap_grad).sum() > 0


def test_kmeans_init_recovers_separated_clusters():
    rng = np.random.default_rng(8)
    d, k = 12, 4
    centres = np.abs(rng.normal(size=(k, d)))
    centres[np.arange(k), np.arange(k)] += 6.0  # well separated directions
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    pts = np.concatenate([c * rng.uniform(0.5, 2.0, (50, 1)) + 0.03 * rng.normal(size=(50, d)) for c in centres])
    keys = jnp.stack([jax.random.PRNGKey(0), jax.random.PRNGKey(1)])  # vmapped over a seed axis
    pts2 = f32(np.stack([pts, pts[rng.permutation(len(pts))]]))
    run = jax.jit(jax.vmap(g.kmeans_init, in_axes=(0, 0, None, None)), static_argnums=(2, 3))
    for cents in np.asarray(run(keys, pts2, k, 10)):
        np.testing.assert_allclose(np.linalg.norm(cents, axis=1), 1.0, rtol=1e-5)
        cos = cents @ centres.T
        best = max(sum(cos[i, p[i]] for i in range(k)) for p in itertools.permutations(range(k)))
        assert best / k > 0.99


# ----------------------------------------------------------------------------------------------- composite
def make_batch(seed, t=4, b=16, d=32, n=8, k=4, num_super=0, unvisited=False):
    """Params, SimNorm-like latents (t, b, d) and contact labels from a numpy RNG; `unvisited` points the last
    prototype away from every (non-negative) latent, so its assignment mass is ~e^-5 of the others'."""
    rng = np.random.default_rng(seed)

    def simnorm_noise(rows, scale):
        return random_soft_s(rng, rows * d // 8, 8, temp=1 / scale).reshape(rows, d)

    mu = simnorm_noise(n, 1.0)
    if unvisited:
        mu[-1] = -1.0
    params = g.GlassParams(mu=f32(mu), assign_logits=f32(0.5 * rng.normal(size=(n, k))),
                           super_logits=f32(0.5 * rng.normal(size=(k, num_super))) if num_super else None)
    z = f32(simnorm_noise(t * b, 2.0).reshape(t, b, d))
    contact = jnp.asarray(np.arange(t * b).reshape(t, b) % 3 == 0)
    return params, z, contact


def test_glass_losses_default_terms_and_diagnostics():
    params, z, _ = make_batch(5)

    @jax.jit
    def reference(params, z):
        s = g.cluster_matrix(params.assign_logits)
        c = g.soft_assignment(z, params.mu, 0.2)
        a = g.transition_graph(c[:-1], c[1:])
        return dict(se=g.structural_entropy(a, s), resistance=g.resistance(a, s),
                    switch=g.k_switch_rate(g.k_label(z, params.mu, s)), window=g.window_consistency_loss(c, 4),
                    proto=g.prototype_balance_loss(c), cluster=g.cluster_balance_loss(c, s),
                    temp=g.temporal_loss(z[:-1], z[1:]), active=g.active_prototypes(c, rule="argmax"))

    total, info = jax.jit(g.glass_losses)(params, z)  # the default settings: those of the glass.* schema
    ref = {k: float(v) for k, v in reference(params, z).items()}
    assert float(info["se"]) == pytest.approx(ref["se"], rel=1e-5)
    assert float(info["loss_se"]) == pytest.approx(ref["se"], rel=1e-5)
    assert float(info["resistance"]) == pytest.approx(ref["resistance"], abs=1e-5)
    assert float(info["loss_proto_bal"]) == pytest.approx(ref["proto"], abs=1e-6)
    assert float(info["loss_cluster_bal"]) == pytest.approx(ref["cluster"], abs=1e-6)
    assert float(info["loss_temp"]) == pytest.approx(ref["temp"], rel=1e-5)
    assert float(info["k_switch_rate"]) == pytest.approx(ref["switch"])
    assert float(info["window_mi"]) == pytest.approx(ref["window"], abs=1e-6)  # default window 4 = T
    # a window longer than the slices is clamped to T = 4 for the diagnostic when the window loss is off
    _, clamped = jax.jit(functools.partial(g.glass_losses, cfg=g.GlassLossConfig(window=9)))(params, z)
    assert float(clamped["window_mi"]) == pytest.approx(ref["window"], abs=1e-6)
    assert float(info["active_prototypes"]) == ref["active"]
    expected = 1e-4 * ref["se"] + 1e-3 * (ref["cluster"] + ref["proto"]) + 1e-4 * ref["temp"]
    assert float(total) == pytest.approx(expected, rel=1e-5)
    assert float(info["total"]) == pytest.approx(float(total))
    for key in ("loss_window", "loss_contrast", "loss_swap", "loss_row_entropy", "se_hier"):
        assert float(info[key]) == 0.0


def all_variants_config(graph_grad="full", graph="rownorm_sym", balance="kl", objective="h2"):
    return g.GlassLossConfig(graph_grad=graph_grad, graph=graph, balance=balance, se_objective=objective,
                             lambda_window=1.0, window=3, lambda_contrast=1.0, lambda_row_entropy=1.0)


@functools.lru_cache(maxsize=None)
def term_jacobian(cfg):
    """jit(jacrev) of the unweighted term vector w.r.t. (params, z), with (terms, diag) as aux; one per config."""
    def term_vector(p, z, contact):
        terms, diag = g.glass_terms(p, z, cfg, contact)
        return jnp.stack([terms[k] for k in TERMS]), (terms, diag)

    return jax.jit(jax.jacrev(term_vector, argnums=(0, 1), has_aux=True))


TERMS = ("loss_se", "loss_cluster_bal", "loss_proto_bal", "loss_swap", "loss_temp", "loss_window",
         "loss_contrast", "loss_row_entropy")
# which of (mu, z, assign_logits, super_logits) each term must send gradient to, whatever the graph setting
ROUTES = {"loss_cluster_bal": (1, 1, 1, 0), "loss_proto_bal": (1, 1, 0, 0), "loss_swap": (1, 1, 0, 0),
          "loss_temp": (0, 1, 0, 0), "loss_window": (1, 1, 0, 0), "loss_contrast": (1, 1, 0, 0),
          "loss_row_entropy": (0, 0, 1, 1)}
SE_ROUTES = {"full": (1, 1, 1, 1), "prototypes": (1, 0, 1, 1), "none": (0, 0, 1, 1)}


@pytest.mark.parametrize("graph_grad,graph,balance,objective", [
    ("full", "rownorm_sym", "kl", "h2"),
    ("prototypes", "counts_sym", "sinkhorn", "neg_resistance"),
    ("none", "flow", "kl", "h2"),
])
def test_every_term_finite_with_gradients_to_exactly_the_intended_parameters(graph_grad, graph, balance, objective):
    """All variants on at once (hierarchical, an unvisited prototype); one Jacobian row per unweighted term."""
    params, z, contact = make_batch(7, num_super=2, unvisited=True)
    cfg = all_variants_config(graph_grad, graph, balance, objective)
    (jp, jz), (terms, info) = term_jacobian(cfg)(params, z, contact)
    for leaf in jax.tree_util.tree_leaves((jp, jz, terms, info)):
        assert np.all(np.isfinite(np.asarray(leaf)))
    unselected_balance = "loss_swap" if balance == "kl" else "loss_proto_bal"  # a constant 0
    for row, name in enumerate(TERMS):
        got = tuple(int(float(jnp.abs(x[row]).sum()) > 0) for x in (jp.mu, jz, jp.assign_logits, jp.super_logits))
        if name == "loss_se":
            want = SE_ROUTES[graph_grad]
        elif name == unselected_balance:
            want = (0, 0, 0, 0)
            assert float(terms[name]) == 0.0
        else:
            want = ROUTES[name]
        assert got == want, name
    if objective == "neg_resistance":
        assert float(terms["loss_se"]) == pytest.approx(float(info["se_hier"] - info["h1"]), abs=1e-5)
    else:
        assert float(terms["loss_se"]) == pytest.approx(float(info["se_hier"]), abs=1e-6)
    assert float(info["se"]) != float(info["se_hier"])
    # the prototype pointing away from every latent is inactive (default rule argmax: never a nearest anchor;
    # rule soft: its assignment mass is ~e^-5 of the others')
    c = g.soft_assignment(z, params.mu, cfg.tau_p)
    nearest = np.asarray(jnp.argmax(c, axis=-1)).ravel()
    assert int(info["active_prototypes"]) == int(np.sum(np.bincount(nearest, minlength=8) / nearest.size > 1 / 16))
    assert (nearest != 7).all() and int(g.active_prototypes(c, rule="soft")) == 7


def test_neg_resistance_has_the_same_cluster_gradient_as_h2():
    rng = np.random.default_rng(9)
    a = jnp.asarray(random_graph(rng, 8), jnp.float32)
    logits = jnp.asarray(rng.normal(size=(8, 3)), jnp.float32)

    @jax.jit
    def both(logits):
        grad_h2 = jax.grad(lambda l: g.structural_entropy(a, g.cluster_matrix(l)))(logits)
        grad_r = jax.grad(lambda l: -g.resistance(a, g.cluster_matrix(l)))(logits)
        return grad_h2, grad_r

    grad_h2, grad_r = both(logits)
    assert float(jnp.abs(grad_h2).sum()) > 0
    np.testing.assert_allclose(np.asarray(grad_h2), np.asarray(grad_r), atol=1e-6)


def test_config_validation():
    with pytest.raises(ValueError, match=r"^glass\.graph: 'nope' is not one of rownorm_sym, counts_sym, flow$"):
        g.GlassLossConfig(graph="nope")
    with pytest.raises(ValueError, match=r"^glass\.graph_grad: "):
        g.GlassLossConfig(graph_grad="sometimes")
    with pytest.raises(ValueError, match=r"^glass\.window: "):
        g.GlassLossConfig(window=0)
    params, z, _ = make_batch(8)
    with pytest.raises(ValueError):
        g.glass_losses(params, z, g.GlassLossConfig(lambda_window=1.0, window=10))
    with pytest.raises(ValueError):
        g.glass_losses(params, z, g.GlassLossConfig(lambda_contrast=1.0))
    with pytest.raises(ValueError):
        g.transition_graph(jnp.ones((2, 3)), jnp.ones((2, 3)), kind="dense")


def test_loss_settings_are_the_config_schema_hashable_and_read_only():
    """GlassLossConfig is config.GlassConfig (same fields, defaults and checks) plus two task-derived values;
    equal settings hash equal (one jit cache entry) and cannot be changed once made (a static jit argument)."""
    from tdmpc_glass.config import GlassConfig

    schema = [(f.name, f.default) for f in dataclasses.fields(GlassConfig)]
    loss_fields = [(f.name, f.default) for f in dataclasses.fields(g.GlassLossConfig)]
    assert loss_fields == schema + [("contact_index", ()), ("intrinsic", False)]
    a, b = g.GlassLossConfig(window=3), g.GlassLossConfig.from_config(GlassConfig(window=3))
    assert a == b and hash(a) == hash(b) and a != g.GlassLossConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.window = 5
    section = GlassConfig(lambda_se=0.5)
    settings = g.GlassLossConfig.from_config(section, contact_index=[13, 14], intrinsic=True)
    section.lambda_se = 0.0  # a copy: later changes to the config section do not reach the settings
    assert settings.lambda_se == 0.5 and settings.contact_index == (13, 14) and settings.intrinsic
    assert settings.contact_threshold == g.CONTACT_THRESHOLD == pytest.approx(math.log(2.0))
    with pytest.raises(ValueError, match=r"^glass\.tau_p: "):
        g.GlassLossConfig.from_config(GlassConfig(tau_p=0.0))


def test_jit_and_vmap_over_seeds_match_per_seed_results():
    seeds = 3
    batches = [make_batch(20 + i, num_super=2) for i in range(seeds)]
    params = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *[b[0] for b in batches])
    z = jnp.stack([b[1] for b in batches])
    contact = jnp.stack([b[2] for b in batches])
    cfg = all_variants_config("none", "flow", "kl", "h2")  # also used by the gradient test: compiled once
    run = jax.jit(jax.vmap(lambda p, z, c: g.glass_losses(p, z, cfg, c)))
    total, info = run(params, z, contact)
    assert total.shape == (seeds,) and all(v.shape == (seeds,) for v in info.values())
    for i, (p, zi, ci) in enumerate(batches):
        _, (terms_i, diag_i) = term_jacobian(cfg)(p, zi, ci)
        np.testing.assert_allclose(float(total[i]), float(g.weighted_total(terms_i, cfg)), rtol=1e-5)
        for key, value in {**terms_i, **diag_i}.items():
            np.testing.assert_allclose(float(info[key][i]), float(value), rtol=1e-4, atol=1e-6)


def test_init_params_shapes():
    init = jax.jit(g.init_params, static_argnums=(1, 2, 3, 4))
    p = init(jax.random.PRNGKey(0), 64, 16, 8, 2)
    assert p.mu.shape == (16, 64) and p.assign_logits.shape == (16, 8) and p.super_logits.shape == (8, 2)
    np.testing.assert_allclose(np.asarray(p.mu.reshape(16, 8, 8).sum(-1)), 1.0, rtol=1e-5)  # SimNorm-shaped
    assert float(jnp.std(p.assign_logits)) > 0.1  # symmetry broken: S is not exactly uniform


# ----------------------------------------------------------------------------------------------- issue 12
def _entropy64(x):
    x = np.asarray(x, np.float64)
    return -float(np.sum(np.where(x > 0, x * np.log(np.where(x > 0, x, 1.0)), 0.0)))


@pytest.mark.parametrize("window", [1, 3, 5])
def test_window_average_form_is_the_logs_formula_read_literally(window):
    """10.2 as the log writes it: E_t[ H(1/W sum_{tau=t}^{t+W} c_tau) - 1/W sum_{tau=t}^{t+W} H(c_tau) ], W+1
    frames, both sums over W; equal to (W+1)/W MI(W+1 frames) - (W+1)/W log((W+1)/W)."""
    rng = np.random.default_rng(window)
    T, B, N = 9, 3, 5
    c = rng.dirichlet(np.full(N, 0.7), (T, B)).astype(np.float32)
    ref = np.mean([_entropy64(c[t:t + window + 1, b].sum(0) / window)
                   - sum(_entropy64(c[tau, b]) for tau in range(t, t + window + 1)) / window
                   for t in range(T - window) for b in range(B)])
    got = float(g.window_consistency_loss(jnp.asarray(c), window, "average"))
    assert got == pytest.approx(ref, rel=1e-4, abs=1e-5)
    a = (window + 1) / window
    mi = float(g.window_consistency_loss(jnp.asarray(c), window + 1, "mi"))
    assert got == pytest.approx(a * mi - a * math.log(a), rel=1e-4, abs=1e-5)
    with pytest.raises(ValueError, match="9 frames"):
        g.window_consistency_loss(jnp.asarray(c[:8]), 8, "average")


def test_binary_contact_label_is_foot_on_ground():
    """10.3's label "foot on ground vs. not" (glass.contrast_label binary) beside the toe + 2 heel pattern."""
    thr = g.CONTACT_THRESHOLD
    obs = np.zeros((4, 3), np.float32)
    obs[1, 1] = obs[2, 2] = obs[3, 1] = obs[3, 2] = thr + 1.0  # airborne, toe, heel, both
    np.testing.assert_array_equal(np.asarray(g.contact_labels(jnp.asarray(obs), (1, 2))), [0, 1, 2, 3])
    np.testing.assert_array_equal(np.asarray(g.contact_labels(jnp.asarray(obs), (1, 2), binary=True)), [0, 1, 1, 1])


def _nt_xent_reference(c, labels, tau, normalize, slices=None, episodes=None):
    """Pair lists built with loops; float64."""
    c = np.asarray(c, np.float64)
    if normalize:
        c = c / np.linalg.norm(c, axis=1, keepdims=True)
    s = c @ c.T / tau
    m = len(c)
    anchors = []
    for i in range(m):
        pos, neg = [], []
        for j in range(m):
            if slices is None:
                if labels[j] == labels[i] and j != i:
                    pos.append(j)
                elif labels[j] != labels[i]:
                    neg.append(j)
            else:
                if labels[j] == labels[i] and slices[j] == slices[i] and j != i:
                    pos.append(j)
                if labels[j] != labels[i] or episodes[j] != episodes[i]:
                    neg.append(j)
        if pos:
            anchors.append(np.mean([-s[i, p] + np.log(np.exp(s[i, p]) + sum(np.exp(s[i, n]) for n in neg))
                                    for p in pos]))
    return float(np.mean(anchors)) if anchors else 0.0


def test_phase_contrastive_pairs_dot_product_and_negatives_across_episodes():
    """10.3: "positive pairs = two frames within the same gait phase (consecutive frames ...); negatives = frames
    from different phases or different episodes", similarity c.c'. contrast_pairs "label" (today's) makes a
    same-label frame of another episode a positive; "episode" makes it a negative, as the log says."""
    rng = np.random.default_rng(3)
    M, N = 12, 4
    c = rng.dirichlet(np.ones(N), M).astype(np.float32)
    labels = np.array([0, 0, 1, 1, 0, 1, 0, 0, 1, 0, 1, 1])
    slices = np.repeat(np.arange(4), 3)  # 4 slices of 3 consecutive frames
    episodes = np.array([0, 0, 0, 1, 1, 1, 0, 0, 0, 2, 2, 2])  # slices 0 and 2 come from one episode
    for normalize in (True, False):
        for tau in (0.1, 0.5):
            got = float(g.phase_contrastive_loss(jnp.asarray(c), jnp.asarray(labels), tau, normalize))
            assert got == pytest.approx(_nt_xent_reference(c, labels, tau, normalize), rel=1e-4)
            got = float(g.phase_contrastive_loss(jnp.asarray(c), jnp.asarray(labels), tau, normalize,
                                                 jnp.asarray(slices), jnp.asarray(episodes)))
            ref = _nt_xent_reference(c, labels, tau, normalize, slices, episodes)
            assert got == pytest.approx(ref, rel=1e-4)
            assert ref != pytest.approx(_nt_xent_reference(c, labels, tau, normalize), rel=1e-3)
    # two frames with identical c and label in different episodes: a positive today, a negative the log's way
    c2 = jnp.asarray([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9]], jnp.float32)
    lab = jnp.asarray([0, 0, 1])
    pooled = g.phase_contrastive_loss(c2, lab, 0.1)
    by_episode = g.phase_contrastive_loss(c2, lab, 0.1, True, jnp.asarray([0, 1, 2]))
    assert float(by_episode) == 0.0  # no anchor has a positive: each frame is its own slice
    assert float(pooled) > 0.0


def _simnorm_latents(rng, centres, counts, noise=0.3):
    z = np.concatenate([centres[i] + noise * rng.standard_normal((n, centres.shape[1]))
                        for i, n in enumerate(counts) if n])
    groups = z.reshape(len(z), -1, 8)
    return np.asarray(jax.nn.softmax(jnp.asarray(groups), axis=-1)).reshape(len(z), -1)


def test_active_prototypes_argmax_fires_on_a_collapsed_seed_and_not_on_a_healthy_one():
    """10.6 "if active < 4 (K=3 basin), restart". Constructed SimNorm latents (d = 64) near 16 prototype
    directions: a stuck seed's batch sits at 2 of them, a healthy seed's is spread over 8. The soft-usage rule
    (the audited one) counts all 16 in both, so the check never fires; the argmax rule counts 2 and 8."""
    rng = np.random.default_rng(0)
    d, n_proto = 64, 16
    logits = 0.7 * rng.standard_normal((n_proto, d))  # SimNorm vectors with cosines near each other, as at init
    mu = np.asarray(jax.nn.softmax(jnp.asarray(logits.reshape(n_proto, -1, 8)), axis=-1)).reshape(n_proto, d)
    stuck = _simnorm_latents(rng, logits, [128, 128] + [0] * 14, noise=0.15)
    healthy = _simnorm_latents(rng, logits, [32] * 8 + [0] * 8, noise=0.15)
    c_stuck = g.soft_assignment(jnp.asarray(stuck), jnp.asarray(mu), 0.2)
    c_healthy = g.soft_assignment(jnp.asarray(healthy), jnp.asarray(mu), 0.2)
    assert int(g.active_prototypes(c_stuck, rule="soft")) == 16  # audited: never < 4
    assert int(g.active_prototypes(c_healthy, rule="soft")) == 16
    assert int(g.active_prototypes(c_stuck, rule="argmax")) == 2 < 4  # fires
    assert int(g.active_prototypes(c_healthy, rule="argmax")) == 8 >= 4  # does not
    # at initialisation (random anchors, latents of an untrained encoder) the count is what the batch visits
    S = jnp.eye(n_proto)[:, :8].at[8:, :].set(jnp.eye(8))  # prototype n -> cluster n mod 8
    assert int(g.active_clusters(c_stuck, S, rule="argmax")) == 2
    assert int(g.active_clusters(c_healthy, S, rule="argmax")) == 8
    # the default of the glass.* section, which the update's diagnostic (train.csv active_prototypes) uses
    assert g.DEFAULT_LOSS.active_rule == "argmax"
    _, info = g.glass_losses(g.GlassParams(jnp.asarray(mu), jnp.zeros((n_proto, 8))),
                             jnp.asarray(stuck).reshape(2, 128, d))
    assert int(info["active_prototypes"]) == 2
