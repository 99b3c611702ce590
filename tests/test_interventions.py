"""The trainer's intervention seam: a new after-round intervention written in one module (this one) runs
after every round, changes the states, logs its events and may take a seed out of the batch."""
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from tdmpc_glass import runlayout
from tdmpc_glass.interventions import Event, from_config
from tdmpc_glass.train import Trainer
from train_script import tiny_config


class FreezePolicyAt:
    """A toy intervention: at env step `at`, zero the policy prior's output layer of every seed, log a
    `freeze` event, and send seed index `dismiss` home."""

    def __init__(self, at: int, dismiss: int):
        self.at, self.dismiss, self.calls = at, dismiss, []

    def after_round(self, states, view):
        self.calls.append((view.prev_env_step, view.env_step, view.active.tolist()))
        if not view.prev_env_step < self.at <= view.env_step:
            return states, []
        last = lambda s: s.policy.mlp.out.weight
        states = eqx.tree_at(last, states, jnp.zeros_like(last(states)))
        events = [Event(int(i), "freeze", {"at": self.at}) for i in np.flatnonzero(view.active)]
        events.append(Event(self.dismiss, "dismissed", {"why": "toy"}, leave={"status": "restarting"}))
        return states, events


def events(run):
    return [json.loads(line) for line in (run / runlayout.EVENTS).read_text().splitlines()]


def test_a_toy_intervention_runs_after_each_round_and_can_take_a_seed_out(tmp_path):
    cfg = tiny_config(steps=80, eval_freq=80, expl_until=1000)  # no updates: the change stays as made
    toy = FreezePolicyAt(at=40, dismiss=1)
    runs = [tmp_path / "seed1", tmp_path / "seed2"]
    trainer = Trainer(cfg, [1, 2], runs, progress=False, interventions=[toy])
    try:
        assert trainer.run() == 0  # a seed taken out on purpose is not a failure
    finally:
        trainer.close()
    # one call per round (5 ticks x 2 envs x action repeat 2 = 20 env steps), each seeing the round's steps
    assert [c[:2] for c in toy.calls] == [(0, 20), (20, 40), (40, 60), (60, 80)][:len(toy.calls)]
    assert toy.calls[-1][2] == [True, False]  # after the dismissal only seed 1 trains on
    assert [(e["event"], e["env_step"]) for e in events(runs[0]) if e["event"] == "freeze"] == [("freeze", 40)]
    assert "dismissed" in [e["event"] for e in events(runs[1])]
    assert runlayout.read_status(runs[1])["status"] == "restarting"
    assert runlayout.read_status(runs[0])["status"] == "done"
    # the change reached the states: seed 1's checkpoint at 80 holds the zeroed layer
    from tdmpc_glass import checkpoint

    state, _ = checkpoint.load(checkpoint.path_for(runs[0] / runlayout.CHECKPOINTS, 80), trainer.state_template())
    assert not np.any(np.asarray(state.policy.mlp.out.weight))


def test_the_scheduled_interventions_follow_the_config():
    cfg = tiny_config()
    assert from_config(cfg, 15, 4, None) == []
    cfg.glass.enabled = True
    cfg.schedule.q_reset_at, cfg.schedule.perturb_at, cfg.schedule.restart_check_at = [100], [200], 300
    names = [type(x).__name__ for x in from_config(cfg, 15, 4, jax.tree.map(lambda x: x, None))]
    assert names == ["QReset", "Perturb", "BasinCheck"]
