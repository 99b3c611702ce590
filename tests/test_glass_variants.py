"""Glass variants wired into the model and the update: phase-contrastive loss with contact labels from the touch
readings (research log 10.3), cluster distribution as pi/Q input (phase v), cluster-entropy intrinsic reward
(phases P, Pa); where every variant's gradients go; Glass off compiles the vanilla update; train.csv columns."""
import csv
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tdmpc_glass import agent, buffer as replay, glass
from tdmpc_glass.config import Config, ConfigError, build_config, check
from tdmpc_glass.envs import dmc
from tdmpc_glass.world_model import count_params, make_networks

from train_script import tiny_config  # tests/train_script.py: pytest puts tests/ (no __init__.py) on sys.path

OBS_DIM, ACT_DIM, TOUCH = 15, 4, (13, 14)  # hopper: position 6, velocity 7, touch 2 (toe, heel)
N, K = 6, 3


def small_config(enabled=True, **glass_fields) -> Config:
    cfg = Config(task="hopper-hop", horizon=3)
    m = cfg.model
    m.size, m.enc_dim, m.mlp_dim, m.latent_dim, m.num_q = 1, 32, 32, 16, 2
    cfg.optim.batch_size = 16
    cfg.train.buffer_capacity, cfg.train.num_envs = 2000, 1
    cfg.glass.enabled = enabled
    cfg.glass.num_prototypes, cfg.glass.num_clusters = N, K
    for key, value in glass_fields.items():
        setattr(cfg.glass, key, value)
    check(cfg)
    return cfg


def fake_obs(rng, shape):
    """Gaussian observations (..., 15) whose touch columns read like the hopper's: 0, or log1p(force) in
    [1.5, 5] (force >> 1 N) with probability 1/2 per sensor."""
    obs = rng.standard_normal((*shape, OBS_DIM))
    for j in TOUCH:
        obs[..., j] = (rng.random(shape) < 0.5) * rng.uniform(1.5, 5.0, shape)
    return obs.astype(np.float32)


def labels_by_hand(obs):
    return (obs[..., 13] > math.log1p(1.0)).astype(int) + 2 * (obs[..., 14] > math.log1p(1.0)).astype(int)


def fake_batch(seed, horizon=3, batch=16):
    rng = np.random.default_rng(seed)
    return replay.Batch(obs=jnp.asarray(fake_obs(rng, (horizon + 1, batch))),
                        action=jnp.asarray(rng.uniform(-1, 1, (horizon, batch, ACT_DIM)), jnp.float32),
                        reward=jnp.asarray(rng.random((horizon, batch)), jnp.float32))


def sq_norm(tree):
    return float(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


# ----------------------------------------------------------------------------------------------- contact labels
def test_touch_indices_and_contact_labels_from_real_hopper_observations():
    assert dmc.touch_indices("hopper-hop") == TOUCH and dmc.touch_indices("hopper-stand") == TOUCH
    assert dmc.touch_indices("walker-walk") == () and dmc.touch_indices("cheetah-run") == ()
    env = dmc.load("hopper-hop", seed=3)
    env.reset()
    rng = np.random.default_rng(0)
    flat, touch = [], []
    for _ in range(300):
        ts = env.step(rng.uniform(-1, 1, ACT_DIM))
        flat.append(dmc.flatten_observation(ts.observation))
        touch.append(np.asarray(ts.observation["touch"], np.float32))
    env.close()
    flat, touch = np.stack(flat), np.stack(touch)
    np.testing.assert_array_equal(flat[:, list(TOUCH)], touch)  # the indices point at the touch readings
    labels = np.asarray(glass.contact_labels(jnp.asarray(flat), TOUCH))
    np.testing.assert_array_equal(labels, labels_by_hand(flat))
    assert len(set(labels.tolist())) >= 2  # random actions reach both contact and flight

    # hand-built: threshold log1p(1 N) = 0.693; bit 0 = toe, bit 1 = heel
    obs = np.zeros((5, OBS_DIM), np.float32)
    obs[:, 13] = [0.0, 0.5, 0.7, 3.0, 0.0]
    obs[:, 14] = [0.0, 0.0, 0.0, 2.0, 0.69]
    np.testing.assert_array_equal(np.asarray(glass.contact_labels(jnp.asarray(obs), TOUCH)), [0, 0, 1, 3, 0])
    with pytest.raises(ValueError):
        glass.contact_labels(jnp.asarray(obs), ())


def test_config_checks_of_the_new_keys():
    cfg = small_config(enabled=True, lambda_contrast=0.1)  # hopper-hop has touch sensors: fine
    assert agent.glass_settings(cfg).contact_index == TOUCH
    cfg.task = "walker-walk"
    with pytest.raises(ValueError, match=r"^glass\.lambda_contrast: .*walker-walk"):
        check(cfg)
    with pytest.raises(ConfigError, match=r"glass\.lambda_contrast: .*walker-walk"):
        build_config([("phases/x.yaml", {"task": "walker-walk", "glass.enabled": True,
                                         "glass.lambda_contrast": 0.1})])
    cfg.glass.enabled = False  # a disabled Glass's settings are inert
    check(cfg)
    for key, value in (("intrinsic_coef", -0.1), ("intrinsic_decay_until", 0), ("contrast_tau", 0.0),
                       ("lambda_contrast", -1.0)):
        bad = small_config(enabled=True)
        setattr(bad.glass, key, value)
        with pytest.raises(ValueError, match=rf"^glass\.{key}: "):
            check(bad)


# ----------------------------------------------------------------------------------------------- the update
# One configuration with every new switch on (plus MoE-Q and hierarchical Glass), one compiled probe of the model
# loss: its terms, the gradient of TD-MPC2's own terms (consistency, reward, value) and of the policy loss.
def all_on_config(**extra):
    fields = dict(lambda_contrast=1.0, contrast_tau=0.5, cluster_input=True, intrinsic_coef=0.1, moe_q=True,
                  num_super=2)
    return small_config(**{**fields, **extra})


@pytest.fixture(scope="module")
def probe():
    cfg = all_on_config()
    h = agent.Hyper.from_config(cfg)
    world, policy = make_networks(cfg, OBS_DIM, ACT_DIM, jax.random.PRNGKey(0))
    # random last Q layers and offsets: at TD-MPC2's zero init every bin has the same logit, no gradient reaches
    # the first layers and the value loss is log(num_bins) whatever the target
    leaves, treedef = jax.tree.flatten(world.qs)
    keys = jax.random.split(jax.random.PRNGKey(9), len(leaves))
    qs = jax.tree.unflatten(treedef, [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
    world = eqx.tree_at(lambda w: (w.qs, w.q_offsets), world, (qs, 0.1 * jnp.ones_like(world.q_offsets)))

    @jax.jit
    def run(world, batch, coef):
        def td_part(w):
            _, (latents, terms) = agent.world_loss(w, policy, w.qs, batch, jax.random.PRNGKey(3), h,
                                                   agent.Coefs(intrinsic=coef))
            td = h.consistency_coef * terms["consistency_loss"] + h.reward_coef * terms["reward_loss"] \
                + h.value_coef * terms["value_loss"]
            return td, (latents, terms)

        (_, (latents, terms)), g_world = jax.value_and_grad(td_part, has_aux=True)(world)
        g_pi = jax.grad(lambda p: agent.policy_loss(p, world, latents, jnp.ones(()), jax.random.PRNGKey(4),
                                                    h)[0])(policy)
        return terms, g_world, g_pi

    return cfg, h, world, policy, run


@pytest.mark.slow
def test_phase_contrastive_term_in_the_update_uses_contact_labels_from_the_observations(probe):
    cfg, h, world, _, run = probe
    assert h.glass.contact_index == TOUCH
    batch = fake_batch(1)
    terms, _, _ = run(world, batch, jnp.float32(0.1))
    c = glass.soft_assignment(world.encode(batch.obs), world.glass.mu, cfg.glass.tau_p).reshape(-1, N)
    labels = jnp.asarray(labels_by_hand(np.asarray(batch.obs)).reshape(-1))
    expected = float(glass.phase_contrastive_loss(c, labels, 0.5))
    assert float(terms["loss_contrast"]) == pytest.approx(expected, rel=1e-4)
    shuffled = float(glass.phase_contrastive_loss(c, labels[np.random.default_rng(0).permutation(labels.size)], 0.5))
    assert abs(shuffled - expected) > 1e-4  # the labels matter: the term is not label-blind
    assert float(terms["loss_contrast"]) > 0


def test_td_mpc2_losses_never_train_the_partition_with_moe_q_cluster_input_and_intrinsic_reward(probe):
    """TD-MPC2's terms (with MoE-Q routing, cluster features and the intrinsic reward in play) reach the offsets
    and the new input columns, never mu, S or the super-cluster logits: routing and features are stop-gradient."""
    _, _, world, _, run = probe
    _, g_world, g_pi = run(world, fake_batch(2), jnp.float32(0.1))
    assert sq_norm(g_world.glass.mu) == 0 and sq_norm(g_world.glass.assign_logits) == 0
    assert sq_norm(g_world.glass.super_logits) == 0
    assert sq_norm(g_world.q_offsets) > 0 and sq_norm(g_world.encoder) > 0 and sq_norm(g_world.dynamics) > 0
    q_first = g_world.qs.hidden[0].linear.weight  # (num_q, mlp_dim, d + A + K)
    assert q_first.shape[-1] == 16 + ACT_DIM + K
    assert all(sq_norm(q_first[i, :, 16 + ACT_DIM:]) > 0 for i in range(2))  # every head's cluster columns learn
    pi_first = g_pi.mlp.hidden[0].linear.weight  # (mlp_dim, d + K)
    assert pi_first.shape[-1] == 16 + K and sq_norm(pi_first[:, 16:]) > 0


# ----------------------------------------------------------------------------------------------- cluster input
def test_cluster_input_grows_the_first_layers_by_k_and_off_is_the_vanilla_network(probe):
    vanilla, on_plain, on_input = small_config(enabled=False), small_config(), small_config(cluster_input=True)
    c_van, c_plain, c_in = (count_params(c, OBS_DIM, ACT_DIM) for c in (vanilla, on_plain, on_input))
    mlp_dim, num_q = 32, 2
    assert c_plain["policy"] == c_van["policy"] and c_plain["q_ensemble"] == c_van["q_ensemble"]
    assert c_in["policy"] - c_van["policy"] == K * mlp_dim
    assert c_in["q_ensemble"] - c_van["q_ensemble"] == num_q * K * mlp_dim
    key = jax.random.PRNGKey(0)
    w_van, p_van = make_networks(vanilla, OBS_DIM, ACT_DIM, key)
    w_plain, p_plain = make_networks(on_plain, OBS_DIM, ACT_DIM, key)
    for a, b in zip(jax.tree.leaves((w_van.encoder, w_van.dynamics, w_van.reward, w_van.qs, p_van)),
                    jax.tree.leaves((w_plain.encoder, w_plain.dynamics, w_plain.reward, w_plain.qs, p_plain))):
        np.testing.assert_array_equal(a, b)
    z = jnp.asarray(np.random.default_rng(0).random((3, 16)), jnp.float32)
    assert w_plain.policy_input(z) is z and not w_plain.cluster_input

    _, _, w_in, p_in, _ = probe  # cluster_input on (random Q heads)
    assert p_in.mlp.hidden[0].linear.weight.shape == (mlp_dim, 16 + K)
    assert w_in.qs.hidden[0].linear.weight.shape == (num_q, mlp_dim, 16 + ACT_DIM + K)
    w_in = eqx.tree_at(lambda w: w.q_offsets, w_in, jnp.zeros_like(w_in.q_offsets))  # Q moves by its input only
    moved = eqx.tree_at(lambda w: w.glass.assign_logits, w_in, w_in.glass.assign_logits[:, ::-1] * 3.0)

    @jax.jit
    def outputs(world):
        x = world.policy_input(z)
        return x, world.cluster_membership(z), world.q_logits(z, jnp.zeros((3, ACT_DIM))), p_in.mean_action(x)

    (x, member, q, act), (_, _, q_moved, act_moved) = outputs(w_in), outputs(moved)
    assert x.shape == (3, 16 + K)
    np.testing.assert_allclose(np.asarray(x[:, 16:]), np.asarray(member), rtol=1e-6)
    # the extra inputs are used: another partition S changes Q and the policy's action
    assert not np.allclose(q, q_moved) and not np.allclose(act, act_moved)


# ----------------------------------------------------------------------------------------------- intrinsic reward
def test_intrinsic_coefficient_schedule():
    assert glass.intrinsic_coefficient(0.1, None, 10**7) == pytest.approx(0.1)
    values = [glass.intrinsic_coefficient(0.1, 1000, s) for s in (0, 250, 500, 1000, 5000)]
    assert values == pytest.approx([0.1, 0.075, 0.05, 0.0, 0.0])
    assert agent.intrinsic_coefficient(small_config(intrinsic_coef=0.1, intrinsic_decay_until=1000), 500) == \
        pytest.approx(0.05)
    assert agent.intrinsic_coefficient(small_config(), 0) is None  # off: no argument, no term
    assert agent.intrinsic_coefficient(small_config(enabled=False, intrinsic_coef=0.1), 0) is None
    assert agent.Hyper.from_config(small_config(intrinsic_coef=0.1)).glass.intrinsic
    assert not agent.Hyper.from_config(small_config()).glass.intrinsic
    # the bonus is paid once per decision, whatever the action repeat: the update has no action repeat to know
    assert "action_repeat" not in agent.Hyper._fields


def test_intrinsic_reward_enters_reward_and_td_targets_only(probe):
    """The losses with coefficient c equal those with coefficient 0 on stored rewards r + c H(c(z_{t+1}) @ S):
    c H once per decision (this config repeats each action twice; the bonus is still paid once), as the log's
    "max bonus ~210" = 0.1 ln 8 x 1000 decisions per episode at its clock."""
    cfg, h, world, policy, run = probe
    batch, coef = fake_batch(3), 0.3
    assert cfg.train.action_repeat == 2
    S = glass.cluster_matrix(world.glass.assign_logits)
    entropy = glass.entropy(glass.soft_assignment(world.encode(batch.obs[1:]), world.glass.mu, 0.2) @ S)  # (H, B)
    assert float(entropy.min()) >= 0 and float(entropy.max()) <= math.log(K) + 1e-6
    on = run(world, batch, jnp.float32(coef))[0]
    by_hand = run(world, batch._replace(reward=batch.reward + coef * entropy), jnp.float32(0.0))[0]
    plain = run(world, batch, jnp.float32(0.0))[0]
    for name in ("reward_loss", "value_loss", "consistency_loss", "glass_loss"):
        assert float(on[name]) == pytest.approx(float(by_hand[name]), rel=1e-5), name
    assert float(on["intrinsic_reward"]) == pytest.approx(coef * float(entropy.mean()), rel=1e-5)
    assert float(on["intrinsic_coef"]) == pytest.approx(coef) and float(plain["intrinsic_reward"]) == 0.0
    assert abs(float(on["value_loss"]) - float(plain["value_loss"])) > 1e-4 * abs(float(plain["value_loss"]))
    with pytest.raises(ValueError, match="intrinsic_coef"):
        agent.world_loss(world, policy, world.qs, batch, jax.random.PRNGKey(0), h)


@pytest.mark.slow
def test_full_update_with_the_new_variants_is_finite_and_leaves_the_buffer_alone():
    cfg = all_on_config(lambda_window=1e-3)
    state = agent.init_state(cfg, OBS_DIM, ACT_DIM, 0)
    rng = np.random.default_rng(0)
    n = 300
    buf = replay.add(state.buffer, jnp.asarray(fake_obs(rng, (n, 1))),
                     jnp.asarray(rng.uniform(-1, 1, (n, 1, ACT_DIM)), jnp.float32),
                     jnp.asarray(rng.random((n, 1)), jnp.float32), (jnp.arange(n) % 101)[:, None])
    state = eqx.tree_at(lambda s: s.buffer, state, buf)
    h = agent.Hyper.from_config(cfg)
    w_tx, p_tx = agent.optimisers(cfg)
    run = lambda s, c: agent.run_updates(s, 0, 2, h, w_tx, p_tx, agent.Coefs(intrinsic=c))
    new, metrics = jax.jit(run)(state, jnp.float32(0.1))
    assert bool(metrics["params_finite"]) and np.isfinite(float(metrics["total_loss"]))
    assert float(metrics["loss_contrast"]) > 0 and 0 < float(metrics["intrinsic_reward"]) <= 2 * 0.1 * math.log(K)
    for a, b in zip(jax.tree.leaves(new.buffer), jax.tree.leaves(state.buffer)):  # never written back
        np.testing.assert_array_equal(a, b)
    assert sq_norm(jax.tree.map(lambda a, b: a - b, new.world.q_offsets, state.world.q_offsets)) > 0

# ----------------------------------------------------------------------------------------------- gradient routes
TERMS = ("loss_se", "loss_cluster_bal", "loss_proto_bal", "loss_swap", "loss_temp", "loss_window",
         "loss_contrast", "loss_row_entropy")
# which of (encoder, mu, assign_logits, super_logits) each unweighted term must reach, whatever the graph setting
ROUTES = {"loss_cluster_bal": (1, 1, 1, 0), "loss_proto_bal": (1, 1, 0, 0), "loss_swap": (1, 1, 0, 0),
          "loss_temp": (1, 0, 0, 0), "loss_window": (1, 1, 0, 0), "loss_contrast": (1, 1, 0, 0),
          "loss_row_entropy": (0, 0, 1, 1)}
SE_ROUTES = {"full": (1, 1, 1, 1), "prototypes": (0, 1, 1, 1), "none": (0, 0, 1, 1)}
# fast: each graph_grad setting once, with each graph kind, both balances and objectives, with and without the
# hierarchy; slow: every (graph_grad, graph) pair
SETTINGS = [("full", "rownorm_sym", "kl", "h2", 2), ("prototypes", "counts_sym", "sinkhorn", "neg_resistance", 2),
            ("none", "flow", "sinkhorn", "h2", 0)]
SLOW_SETTINGS = [(gg, graph, ("kl", "sinkhorn")[i % 2], ("h2", "neg_resistance")[i // 2 % 2], 2 * (i % 3 != 1))
                 for i, (gg, graph) in enumerate((gg, graph) for gg in ("full", "prototypes", "none")
                                                 for graph in ("rownorm_sym", "counts_sym", "flow"))
                 if (gg, graph) not in {(x[0], x[1]) for x in SETTINGS}]


def check_routes(graph_grad, graph, balance, objective, num_super):
    """Every Glass term of the whole model (all variants on: window, contrast with labels from the observations,
    row entropy, MoE-Q, cluster input, intrinsic reward, hierarchical when num_super > 0): finite, and its gradient
    reaches exactly its parameters among the encoder, mu, S and the super-cluster logits. (That TD-MPC2's own
    terms never reach mu, S or the super logits is test_td_mpc2_losses_never_train_the_partition.)"""
    cfg = small_config(graph_grad=graph_grad, graph=graph, balance=balance, se_objective=objective,
                       num_super=num_super, lambda_window=1.0, window=3, lambda_contrast=1.0,
                       lambda_row_entropy=1.0, moe_q=True, cluster_input=True, intrinsic_coef=0.1)
    settings = agent.glass_settings(cfg)
    world, _ = make_networks(cfg, OBS_DIM, ACT_DIM, jax.random.PRNGKey(0))
    obs = fake_batch(4).obs

    def term_vector(w):
        contact = glass.contact_labels(obs, settings.contact_index, settings.contact_threshold)
        terms, diag = glass.glass_terms(w.glass, w.encode(obs), settings, contact)
        return jnp.stack([terms[k] for k in TERMS]), diag

    jac, diag = jax.jit(jax.jacrev(term_vector, has_aux=True))(world)
    for leaf in jax.tree.leaves((jac, diag)):
        assert np.all(np.isfinite(np.asarray(leaf)))
    unselected_balance = "loss_swap" if balance == "kl" else "loss_proto_bal"
    for row, name in enumerate(TERMS):
        row_of = lambda tree: jax.tree.map(lambda x: x[row], tree)
        reached = lambda tree: int(sq_norm(row_of(tree)) > 0)
        got = (reached(jac.encoder), reached(jac.glass.mu), reached(jac.glass.assign_logits),
               reached(jac.glass.super_logits) if num_super else 0)
        if name == "loss_se":
            want = SE_ROUTES[graph_grad][:3] + ((SE_ROUTES[graph_grad][3],) if num_super else (0,))
        elif name == unselected_balance:
            want = (0, 0, 0, 0)
        else:
            want = ROUTES[name][:3] + ((ROUTES[name][3],) if num_super else (0,))
        assert got == want, (name, got, want)


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: "-".join(map(str, s)))
def test_every_variant_sends_gradients_to_exactly_the_intended_parameters(setting):
    check_routes(*setting)


@pytest.mark.slow
@pytest.mark.parametrize("setting", SLOW_SETTINGS, ids=lambda s: "-".join(map(str, s)))
def test_every_variant_every_combination_of_graph_settings(setting):
    check_routes(*setting)


# ----------------------------------------------------------------------------------------------- Glass off
def test_glass_off_with_the_new_keys_set_compiles_exactly_the_vanilla_update():
    vanilla = small_config(enabled=False)
    off = small_config(enabled=False, lambda_contrast=1.0, cluster_input=True, intrinsic_coef=0.1,
                       intrinsic_decay_until=1000, moe_q=True, num_super=2)
    assert count_params(vanilla, OBS_DIM, ACT_DIM) == count_params(off, OBS_DIM, ACT_DIM)
    assert agent.glass_settings(off) is None and agent.intrinsic_coefficient(off, 0) is None

    def jaxpr(cfg):
        state = jax.eval_shape(lambda: agent.init_state(cfg, OBS_DIM, ACT_DIM, 0))
        h = agent.Hyper.from_config(cfg)
        w_tx, p_tx = agent.optimisers(cfg)
        coef = agent.intrinsic_coefficient(cfg, 0)
        coefs = agent.Coefs(intrinsic=coef)
        return str(jax.make_jaxpr(lambda s: agent.run_updates(s, 0, 2, h, w_tx, p_tx, coefs))(state))

    assert jaxpr(vanilla) == jaxpr(off)
    assert jaxpr(small_config(enabled=True, cluster_input=True)) != jaxpr(vanilla)  # the comparison can fail


# ----------------------------------------------------------------------------------------------- a real run
@pytest.mark.slow
def test_tiny_run_with_the_new_variants_logs_diagnostics_and_never_retraces(tmp_path):
    from tdmpc_glass.train import Trainer

    cfg = tiny_config(steps=640, eval_freq=320)
    g = cfg.glass
    g.enabled, g.num_prototypes, g.num_clusters = True, N, K
    g.lambda_contrast, g.cluster_input, g.intrinsic_coef, g.intrinsic_decay_until = 0.1, True, 0.1, 480
    g.lambda_window, g.window = 1e-3, 4
    check(cfg)
    run = tmp_path / "seed1"
    trainer = Trainer(cfg, [1], [run], progress=False)
    try:
        assert trainer.run() == 0
    finally:
        trainer.close()
    # a decaying coefficient is a traced value: the round kinds of test_train's vanilla run, nothing more
    # (trainer.traces counts the traces of the round function from inside it)
    assert trainer.traces["round"] == 7, trainer.traces  # test_train's 6 step kinds, plus the schedule's own inputs
    with open(run / "train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows
    columns = {"se", "h1", "resistance", "active_prototypes", "active_clusters", "k_switch_rate", "window_mi",
               "glass_loss", "loss_se", "loss_cluster_bal", "loss_proto_bal", "loss_temp", "loss_window",
               "loss_contrast", "intrinsic_reward", "intrinsic_coef"}
    assert columns <= set(rows[0]), columns - set(rows[0])
    for r in rows:
        assert all(np.isfinite(float(r[c])) for c in columns), r
        step = int(r["env_step"])
        # rows average the rounds since the previous row: the coefficient is at most the schedule's at its start
        assert 0.0 <= float(r["intrinsic_coef"]) <= 0.1 + 1e-7
        if step > 480 + cfg.train.log_freq:
            assert float(r["intrinsic_coef"]) == 0.0 and float(r["intrinsic_reward"]) == 0.0
    coefs = [float(r["intrinsic_coef"]) for r in rows]
    assert coefs == sorted(coefs, reverse=True) and coefs[0] > 0
    assert float(rows[-1]["loss_contrast"]) > 0
    with open(run / "eval.csv", newline="") as f:
        evals = list(csv.DictReader(f))
    assert [int(r["env_step"]) for r in evals] == [0, 320, 640]


def test_cluster_input_grad_lets_the_value_loss_move_the_partition_and_the_encoder_through_that_input():
    """glass.cluster_input_grad (phase v): the TD terms' gradients reach mu and S through the cluster features
    of pi's and Q's input; off (the default), they do not (see the stop-gradient test above). The MoE router stays
    stop-gradient either way."""
    def td_grads(grad_flows):
        cfg = small_config(cluster_input=True, cluster_input_grad=grad_flows)
        h = agent.Hyper.from_config(cfg)
        world, policy = make_networks(cfg, OBS_DIM, ACT_DIM, jax.random.PRNGKey(0))
        assert world.cluster_input_grad is grad_flows
        leaves, treedef = jax.tree.flatten(world.qs)  # random last layers: zero-init heads pass no gradient back
        keys = jax.random.split(jax.random.PRNGKey(9), len(leaves))
        world = eqx.tree_at(lambda w: w.qs, world, jax.tree.unflatten(
            treedef, [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]))

        def value_part(w):
            _, (_, terms) = agent.world_loss(w, policy, w.qs, fake_batch(5), jax.random.PRNGKey(3), h)
            return terms["value_loss"]

        return eqx.filter_jit(jax.grad(value_part))(world).glass

    on = td_grads(True)  # off: test_td_mpc2_losses_never_train_the_partition_... (the probe has cluster_input on)
    assert sq_norm(on.mu) > 0 and sq_norm(on.assign_logits) > 0
    assert not small_config(cluster_input=True).glass.cluster_input_grad  # the schema's default: today's runs
