"""train.explore_updates: TD-MPC2's burst against the research log's loop (updates at K_UPDATE while actions are
still random, from a warm-up on), k-means anchors at EXPL_UNTIL from a trained encoder, and a run at the log's
clock writing the rate into train.csv."""
import csv

import pytest

from experiments.phases import resolve
from tdmpc_glass.config import ConfigError, build_config, derive
from tdmpc_glass.rounds import Counters, plan_round
from tdmpc_glass.train import train
from train_script import tiny_config


def simulate_rounds(cfg, until: int):
    """[(env step at the round's end, updates of the round, k-means in it, updates before it)] as the loop runs
    them (train.Trainer.collect_and_update's counters, without the envs)."""
    d, counters, out = derive(cfg), Counters(), []
    per_round = d.steps_per_env_per_round * cfg.train.action_repeat * cfg.train.num_envs
    env_step = 0
    while env_step < until:
        env_step += per_round
        plan, _ = plan_round(cfg, d, env_step, counters)
        out.append((env_step, plan.num_updates, plan.kmeans, counters.updates))
        counters = counters._replace(updates=counters.updates + plan.num_updates,
                                     burst_done=counters.burst_done or env_step >= d.expl_until_env_steps)
    return out


def test_ledger_phases_update_at_k_update_while_exploring_and_base_keeps_the_burst():
    rounds = simulate_rounds(resolve("baseline").cfg, 30_000)
    by_step = {step: n for step, n, _, _ in rounds}
    assert by_step[200] == by_step[800] == 0  # warm-up: the first episode (1000 decisions)
    assert all(n == 50 for step, n, _, _ in rounds if step >= 1000)  # 0.25 per decision, exploring or not
    assert sum(n for step, n, _, _ in rounds if step <= 25_000) == 50 * (25_000 - 800) // 200
    base = simulate_rounds(resolve("base").cfg, 6000)  # TD-MPC2: 2500 random decisions, one burst of 2500
    assert [n for step, n, _, _ in base if step < 5000] == [0] * 2499
    assert [n for step, n, _, _ in base if step >= 5000][:3] == [2500, 1, 1]


def test_kmeans_init_clusters_the_latents_of_an_encoder_trained_through_the_random_phase():
    cfg = resolve("kmeans_init").cfg
    rounds = simulate_rounds(cfg, 500_400)
    kmeans = [(step, before) for step, _, on, before in rounds if on]
    assert len(kmeans) == 1
    step, updates_before = kmeans[0]
    assert step == 500_000  # at EXPL_UNTIL, once
    assert updates_before == 100 * (500_000 - 1000) // 200  # ~250k updates at aa_winner's 0.5 per decision
    # under TD-MPC2's burst (selectable) k-means still sees the seeding data before any update
    burst = build_config([("test", {**_flat(cfg), "train.explore_updates": "burst"})])
    assert [(s, b) for s, _, on, b in simulate_rounds(burst, 500_400) if on] == [(500_000, 0)]


def _flat(cfg):
    from tdmpc_glass.config import flatten, to_dict

    return flatten(to_dict(cfg))


@pytest.mark.parametrize("overrides, key", [
    ({"train.explore_updates": "sometimes"}, "train.explore_updates"),
    ({"train.explore_updates": "steady", "train.seed_updates": 10}, "train.seed_updates"),
    ({"train.update_warmup": 100}, "train.update_warmup"),  # burst (the default) has no warm-up of its own
    ({"train.explore_updates": "steady", "train.update_warmup": -1}, "train.update_warmup"),
])
def test_bad_explore_update_settings_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=rf"resolved config: {key}: "):
        build_config([("test", overrides)])


@pytest.mark.slow  # a real run (about a minute on 2 cores)
def test_a_run_at_the_logs_clock_updates_while_exploring_at_the_configured_rate(tmp_path):
    """Action repeat 1, one env: rounds of 10 decisions with 4 updates (0.4 per decision) from the end of the
    first 20-decision episode on, while actions stay random until decision 60; train.csv's update column says so."""
    cfg = tiny_config(action_repeat=1, num_envs=1, episode_length=20, collect_steps=10, k_update=4, expl_until=60,
                      seed_updates=None, explore_updates="steady", steps=100, log_freq=20, eval_freq=100,
                      eval_episodes=1, checkpoint_freq=100)
    run = tmp_path / "seed1"
    assert train(cfg, [1], [run], progress=False) == 0
    with open(run / "train.csv", newline="") as f:
        logged = {int(r["env_step"]): int(r["update"]) for r in csv.DictReader(f)}
    assert logged[20] == 4 and logged[40] == 12 and logged[60] == 20  # exploring: 0.4 per decision after 10
    assert logged[100] == 4 * (100 - 10) // 10
    assert all(logged[step] == 0.4 * (step - 10) for step in logged if step >= 20)
