"""`tdmpc-glass check-official GOLDEN_DIR`: our networks, one update and the planner against the official TD-MPC2.

GOLDEN_DIR holds what the official code computed for one checkpoint, batch and set of random draws
(../shared/reference/tdmpc2-golden/README.md describes every array). We load the same checkpoint
(tdmpc_glass/official.py), run our encoder, dynamics, reward, Q heads (online and target), policy prior, the
update (agent.update) and the planner (planner.plan) with the recorded draws handed in through the random-source
seam (tdmpc_glass/draws.py: Replay), and print one line per quantity: max absolute and relative error against the
official output and the tolerance (the README's float32 tolerances). Exit 0 only if every quantity is within it;
1 if any is not; 2 for an unreadable directory (one line).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# README "Tolerances for a float32 reimplementation": (atol, rtol) per kind of quantity
TOL = {
    "latent": (1e-5, 0.0), "hidden": (3e-5, 0.0), "logits": (1e-4, 0.0), "value": (1e-4, 1e-5),
    "action": (5e-5, 0.0), "log_prob": (0.5, 0.0), "scaled_entropy": (1e-4, 1e-5), "loss": (0.0, 3e-5),
    "grad": (1e-5, 0.0), "param": (1e-4, 0.0), "target": (1e-6, 0.0), "symlog": (1e-7, 1e-6),
    "two_hot": (2e-5, 0.0), "exact": (0.0, 0.0),
}
# the official config fields the golden config.json sets -> our dotted keys
CONFIG_KEYS = {
    "horizon": "horizon", "batch_size": "optim.batch_size", "lr": "optim.lr", "enc_lr_scale": "optim.enc_lr_scale",
    "grad_clip_norm": "optim.grad_clip_norm", "rho": "optim.rho", "consistency_coef": "optim.consistency_coef",
    "reward_coef": "optim.reward_coef", "value_coef": "optim.value_coef", "entropy_coef": "optim.entropy_coef",
    "tau": "optim.tau", "discount_denom": "optim.discount_denom", "discount_min": "optim.discount_min",
    "discount_max": "optim.discount_max", "iterations": "planner.iterations", "num_samples": "planner.num_samples",
    "num_elites": "planner.num_elites", "num_pi_trajs": "planner.num_pi_trajs", "min_std": "planner.min_std",
    "max_std": "planner.max_std", "temperature": "planner.temperature", "simnorm_dim": "model.simnorm_dim",
    "vmin": "model.vmin", "vmax": "model.vmax", "dropout": "model.dropout", "episode_length": "train.episode_length",
    "mpc": "planner.mpc",
}


class GoldenError(ValueError):
    """A golden directory that cannot be used: one line naming the file."""


@dataclass
class Line:
    name: str
    abs_err: float
    rel_err: float
    tol: tuple
    ok: bool
    note: str = ""


def compare(name: str, ours, theirs, kind: str, mask=None) -> Line:
    """Elementwise |ours - theirs| <= atol + rtol * |theirs| (exact equality for discrete kinds)."""
    ours = np.asarray(ours, dtype=np.float64)
    theirs = np.asarray(theirs, dtype=np.float64)
    if ours.shape != theirs.shape:
        if ours.size == theirs.size:
            ours = ours.reshape(theirs.shape)
        else:
            return Line(name, float("inf"), float("inf"), TOL[kind], False,
                        f"shape {ours.shape} vs official {theirs.shape}")
    if mask is not None:
        ours, theirs = ours[mask], theirs[mask]
    atol, rtol = TOL[kind]
    diff = np.abs(ours - theirs)
    finite = np.isfinite(theirs) | np.isfinite(ours)
    same_inf = (ours == theirs) & ~np.isfinite(theirs)
    diff = np.where(same_inf, 0.0, np.where(finite, diff, 0.0))
    ok = bool(np.all(diff <= atol + rtol * np.abs(np.where(np.isfinite(theirs), theirs, 0.0))))
    big = np.abs(theirs) > 1e-6
    rel = float(np.max(diff[big] / np.abs(theirs[big]))) if np.any(big & np.isfinite(theirs)) else 0.0
    return Line(name, float(diff.max()) if diff.size else 0.0, rel, (atol, rtol), ok)


def load_golden(folder: Path) -> dict:
    folder = Path(folder)
    if not folder.is_dir():
        raise GoldenError(f"{folder}: no such directory")
    out = {}
    for name in ("inputs", "forward", "update", "plan"):
        path = folder / f"{name}.npz"
        try:
            with np.load(path) as data:
                out[name] = {k: data[k] for k in data.files}
        except (OSError, ValueError) as e:
            raise GoldenError(f"{path}: unreadable ({type(e).__name__}: {str(e)[:100]})") from None
    try:
        out["config"] = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise GoldenError(f"{folder / 'config.json'}: unreadable ({type(e).__name__})") from None
    return out


def golden_config(official_cfg: dict, dims):
    """Our Config for the golden set: its model size (from the checkpoint's shapes) and the official fields."""
    from tdmpc_glass.config import build_config

    overrides = {"task": official_cfg["task"], **dims.overrides()}
    for key, ours in CONFIG_KEYS.items():
        if key in official_cfg:
            overrides[ours] = official_cfg[key]
    overrides["optim.q_scale_tau"] = official_cfg["tau"]  # the official RunningScale lerps with cfg.tau
    overrides["model.num_bins"] = official_cfg["num_bins"]
    overrides["train.buffer_capacity"] = 1000  # the update gets its batch from the golden set: no replay needed
    if official_cfg.get("episodic"):
        raise GoldenError("episodic golden sets (a termination head) are not supported")
    return build_config([("golden config.json", overrides)])


def layer_outputs(mlp, x):
    """Each layer's output of one of our MLPs (after its activation)."""
    outs = []
    for layer in mlp.hidden:
        x = layer(x)
        outs.append(x)
    outs.append(mlp.out(x))
    return outs


def draws_of(phase: dict, prefix: str = "") -> dict:
    """The recorded draws of a phase (or act() call) by seam site, in call order."""
    sites = {"randn_like": "policy_eps", "randperm": "q_pair", "dropout": "q_dropout",
             "exponential_": "exponential"}
    recorded: dict[str, list] = {}
    for name in phase[f"{prefix}draws"]:
        name = str(name)
        function = name.split("_", 2)[2]
        value = phase[f"{prefix}{name}"]
        site = sites.get(function) or ("mppi_noise" if value.ndim == 3 else "explore_noise")
        recorded.setdefault(site, []).append(value)
    return recorded


def corrected_log_prob(eps, log_std, pre_tanh):
    """The official log-probability with the tanh correction (forward.npz pi.log_prob)."""
    import jax.numpy as jnp

    from tdmpc_glass.math import gaussian_logprob

    return gaussian_logprob(eps, log_std) - jnp.log(jnp.maximum(1 - jnp.tanh(pre_tanh) ** 2, 0) + 1e-6).sum(-1)


class Collector:
    """Quantities to compare, gathered while a section is traced: `add` keeps our (traced) array under its name
    and the official array with its tolerance kind; `lines` compares them once the section has run."""

    def __init__(self):
        self.ours, self.spec, self.values = {}, [], {}

    def add(self, name, ours, theirs, kind):
        self.ours[name] = ours
        self.spec.append((name, theirs, kind))

    def run(self, section, state) -> list[Line]:
        """Run section(self, state) as one jitted call (fast on a CPU; its Replay hands its draws out while
        tracing). The state is an argument, not a closed-over constant, which XLA would spend long folding."""
        import equinox as eqx

        self.values = eqx.filter_jit(lambda st: (section(self, st), self.ours)[1])(state)
        return [compare(name, self.values[name], theirs, kind) for name, theirs, kind in self.spec]


def unused(name: str, replay) -> list[Line]:
    """A failing line when the code took fewer draws than the official code made (a draw site missing)."""
    left = replay.left()
    return [Line(f"{name}.draws_used", 0, 0, TOL["exact"], False, f"draws left: {left}")] if left else []


def run_checks(folder: Path) -> list[Line]:
    import jax

    from tdmpc_glass import agent, official
    from tdmpc_glass.config import derive

    g = load_golden(folder)
    try:
        state_dict = official.read_state_dict(Path(folder) / "checkpoint.pt")
        dims = official.infer_dims(state_dict, "checkpoint.pt")
    except official.OfficialCheckpointError as e:
        raise GoldenError(str(e)) from None
    cfg = golden_config(g["config"]["config"], dims)
    state = agent.init_state(cfg, dims.obs_dim, dims.act_dim, 0)
    world, policy, target_qs = official.load_into(state.world, state.policy, state.target_qs, state_dict)
    state = agent.AgentState(world, policy, target_qs, state.world_opt, state.policy_opt, state.q_scale,
                             state.buffer, state.key)
    key = jax.random.PRNGKey(0)  # replayed draws ignore keys
    return (check_forward(cfg, derive(cfg), state, g["inputs"], g["forward"], key)
            + check_update(cfg, state, g["inputs"], g["update"], key)
            + check_plan(cfg, derive(cfg), state, g["inputs"], g["plan"], key))


def check_forward(cfg, d, state, inp, fwd, key) -> list[Line]:
    """forward.npz: every network head with the checkpoint's weights, no dropout; the math helpers."""
    import jax.numpy as jnp

    from tdmpc_glass import math as tmath
    from tdmpc_glass.draws import Replay
    from tdmpc_glass.nn import simnorm

    m = cfg.model
    replay = Replay(draws_of(fwd))

    def section(col, state):
        check, world, policy, target_qs = col.add, state.world, state.policy, state.target_qs
        obs, action, reward = (jnp.asarray(inp[k]) for k in ("obs", "action", "reward"))
        z = world.encode(obs)
        for i, out in enumerate(layer_outputs(world.encoder, obs)):
            check(f"layers.encoder.{i}", out, fwd[f"layers.encoder.{i}"],
                  "latent" if i == len(world.encoder.hidden) else "hidden")
        check("encode.z", z, fwd["encode.z"], "latent")
        za = jnp.concatenate([z[:-1], action], -1)
        for i, out in enumerate(layer_outputs(world.dynamics, za)):
            check(f"layers.dynamics.{i}", out, fwd[f"layers.dynamics.{i}"], "latent" if i == 2 else "hidden")
        check("next.z", world.next(z[:-1], action), fwd["next.z"], "latent")
        for i, out in enumerate(layer_outputs(world.reward, za)):
            check(f"layers.reward.{i}", out, fwd[f"layers.reward.{i}"], "logits" if i == 2 else "hidden")
        reward_logits = world.reward_logits(z[:-1], action)
        check("reward.logits", reward_logits, fwd["reward.logits"], "logits")
        check("reward.value", world.decode(reward_logits), fwd["reward.value"][..., 0], "value")
        check("reward.soft_ce", world.soft_ce(reward_logits, reward[..., 0]), fwd["reward.soft_ce"][..., 0],
              "value")
        q_logits = world.q_logits(z[:-1], action)
        check("q.logits", q_logits, fwd["q.logits"], "logits")
        check("q.value", world.decode(q_logits), fwd["q.value"][..., 0], "value")
        tq_logits = world.q_logits(z[:-1], action, qs=target_qs)
        check("q_target.logits", tq_logits, fwd["q_target.logits"], "logits")
        check("q_target.value", world.decode(tq_logits), fwd["q_target.value"][..., 0], "value")
        pi_action, pi_mean, pi_scaled = policy(world.policy_input(z), key, replay)
        check("q_target.min2", world.q_value(z[:-1], action, key, "min", qs=target_qs, draws=replay),
              fwd["q_target.min2"][..., 0], "value")
        check("q.avg2", world.q_value(z[:-1], action, key, "avg", draws=replay), fwd["q.avg2"][..., 0], "value")
        raw = policy.mlp(z)
        for i, out in enumerate(layer_outputs(policy.mlp, z)):
            check(f"layers.pi.{i}", out, fwd[f"layers.pi.{i}"], "logits" if i == 2 else "hidden")
        check("pi.raw", raw, fwd["pi.raw"], "logits")
        mu, raw_log_std = jnp.split(raw, 2, axis=-1)
        log_std = policy.log_std(raw_log_std)
        check("pi.mean", pi_mean, fwd["pi.mean"], "action")
        check("pi.log_std", log_std, fwd["pi.log_std"], "action")
        check("pi.action", pi_action, fwd["pi.action"], "action")
        eps = jnp.asarray(fwd["rand_0_randn_like"])
        log_prob = corrected_log_prob(eps, log_std, mu + eps * jnp.exp(log_std))
        check("pi.log_prob", log_prob, fwd["pi.log_prob"][..., 0], "log_prob")
        check("pi.entropy", -log_prob, fwd["pi.entropy"][..., 0], "log_prob")
        check("pi.scaled_entropy", pi_scaled, fwd["pi.scaled_entropy"][..., 0], "scaled_entropy")
        x = jnp.asarray(fwd["two_hot.x"][..., 0])
        check("two_hot.out", tmath.two_hot(x, m.num_bins, m.vmin, m.vmax), fwd["two_hot.out"], "two_hot")
        check("two_hot_inv.of_log_two_hot",
              tmath.two_hot_inv(jnp.log(jnp.asarray(fwd["two_hot.out"])), m.num_bins, m.vmin, m.vmax),
              fwd["two_hot_inv.of_log_two_hot"][..., 0], "value")
        check("symlog.out", tmath.symlog(jnp.asarray(fwd["symlog.x"])), fwd["symlog.out"], "symlog")
        check("symexp.out", tmath.symexp(jnp.asarray(fwd["symlog.x"])), fwd["symexp.out"], "symlog")
        check("simnorm.out", simnorm(jnp.asarray(fwd["simnorm.x"]), m.simnorm_dim), fwd["simnorm.out"], "latent")

    lines = Collector().run(section, state)
    lines += [compare("discount", d.discount, fwd["discount"], "loss"),
              compare("bin_size", (m.vmax - m.vmin) / (m.num_bins - 1), fwd["bin_size"], "loss")]
    return lines + unused("forward", replay)


def check_update(cfg, state, inp, upd, key) -> list[Line]:
    """update.npz: one agent.update with the recorded draws (losses, norms, scale, parameters after), the
    gradients of world_loss and policy_loss, and the intermediates from our components with the same draws."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from tdmpc_glass import agent, official
    from tdmpc_glass.buffer import Batch
    from tdmpc_glass.draws import Replay

    h = agent.Hyper.from_config(cfg)
    world_tx, policy_tx = agent.optimisers(cfg)
    obs, action, reward = (jnp.asarray(inp[k]) for k in ("obs", "action", "reward"))
    batch = Batch(obs, action, reward[..., 0])
    recorded = draws_of(upd)
    replays = {name: Replay(recorded) for name in ("update", "parts")}
    # each loss alone: the model loss's draws are the first of each site (TD target, value loss), the policy
    # loss's the second
    replays["world_loss"] = Replay({site: arrays[:1] for site, arrays in recorded.items()})
    replays["policy_loss"] = Replay({site: arrays[1:] for site, arrays in recorded.items()})

    def section(col, state):
        check, world, policy = col.add, state.world, state.policy
        new, metrics = agent.update(state, batch, key, h, world_tx, policy_tx, draws=replays["update"])
        for ours, theirs in (("consistency_loss", "consistency_loss"), ("reward_loss", "reward_loss"),
                             ("value_loss", "value_loss"), ("total_loss", "total_loss"),
                             ("grad_norm", "grad_norm"), ("pi_loss", "pi_loss"), ("pi_grad_norm", "pi_grad_norm"),
                             ("q_scale", "pi_scale")):
            check(f"info.{theirs}", metrics[ours], upd[f"info.{theirs}"], "loss")
        check("scale.value_after", new.q_scale, upd["scale.value_after"][0], "loss")
        check("clip.model_total_norm", metrics["grad_norm"], upd["clip.model_total_norm"], "loss")
        check("clip.pi_total_norm", metrics["pi_grad_norm"], upd["clip.pi_total_norm"], "loss")

        parts = replays["parts"]
        next_z = world.encode(obs[1:])
        check("td.next_z", next_z, upd["td.next_z"], "latent")
        pi_action = policy(world.policy_input(next_z), key, parts)[0]
        check("td.pi_action", pi_action, upd["td.pi_action"], "action")
        q_min2 = world.q_value(next_z, pi_action, key, "min", qs=state.target_qs, draws=parts)
        check("td.q_min2", q_min2, upd["td.q_min2"][..., 0], "value")
        check("td.target", reward[..., 0] + h.discount * q_min2, upd["td.target"][..., 0], "value")
        (_, (latents, _)), world_grads = eqx.filter_value_and_grad(agent.world_loss, has_aux=True)(
            world, policy, state.target_qs, batch, key, h, agent.NO_COEFS, replays["world_loss"])
        check("model.z0", latents[0], upd["model.z0"], "latent")
        check("model.zs", latents, upd["model.zs"], "latent")
        check("model.q_logits", world.q_logits(latents[:-1], action, dropout_key=key, draws=parts),
              upd["model.q_logits"], "logits")
        check("model.reward_logits", world.reward_logits(latents[:-1], action), upd["model.reward_logits"], "logits")
        zs = jax.lax.stop_gradient(latents)
        pi_act, pi_mean, scaled = policy(world.policy_input(zs), key, parts)
        mu, raw_log_std = jnp.split(policy.mlp(zs), 2, axis=-1)
        log_std = policy.log_std(raw_log_std)
        eps = jnp.asarray(upd["rand_3_randn_like"])
        entropy = -corrected_log_prob(eps, log_std, mu + eps * jnp.exp(log_std))
        check("pi.action", pi_act, upd["pi.action"], "action")
        check("pi.mean", pi_mean, upd["pi.mean"], "action")
        check("pi.log_std", log_std, upd["pi.log_std"], "action")
        check("pi.entropy", entropy, upd["pi.entropy"][..., 0], "log_prob")
        check("pi.scaled_entropy", scaled, upd["pi.scaled_entropy"][..., 0], "scaled_entropy")
        check("info.pi_entropy", entropy.mean(), upd["info.pi_entropy"], "log_prob")
        check("info.pi_scaled_entropy", scaled.mean(), upd["info.pi_scaled_entropy"], "scaled_entropy")
        q_avg2 = new.world.q_value(zs, pi_act, key, "avg", dropout_key=key, draws=parts)
        check("pi.q_avg2", q_avg2, upd["pi.q_avg2"][..., 0], "value")
        check("scale.percentiles", jnp.percentile(q_avg2[0], jnp.array([5.0, 95.0])),
              upd["scale.percentiles"][:, 0], "loss")

        # gradients: the model loss's (before clipping), the policy loss's on the rolled-out latents
        _, pi_grads = eqx.filter_value_and_grad(agent.policy_loss, has_aux=True)(
            policy, new.world, zs, state.q_scale, key, h, agent.NO_COEFS, replays["policy_loss"])
        grads = official.named_arrays(world_grads, pi_grads, world_grads.qs)
        for name in sorted(k for k in upd if k.startswith("grad.")):
            check(name, grads[name[len("grad."):]], upd[name], "grad")
        after = official.named_arrays(new.world, new.policy, new.target_qs)
        for name in sorted(k for k in upd if k.startswith("after.")):
            key_name = name[len("after."):]
            if key_name in after:
                check(name, after[key_name], upd[name], "target" if key_name.startswith("_target") else "param")

    lines = Collector().run(section, state)
    for name in replays:
        lines += unused(f"update.{name}", replays[name])
    return lines


def check_plan(cfg, d, state, inp, pln, key) -> list[Line]:
    """plan.npz: the official act() calls in order (warm start from the previous call's mean), every MPPI
    iteration's internals."""
    import jax.numpy as jnp

    from tdmpc_glass.draws import Replay
    from tdmpc_glass.planner import PlanSettings, plan

    act_dim = int(inp["action"].shape[-1])
    s = PlanSettings.from_config(cfg.planner, cfg.horizon, d.discount, act_dim)
    lines: list[Line] = [compare("planner.iterations", s.iterations, len({k.split(".")[1] for k in pln
                                                                          if ".iter" in k and k.startswith("call0.")}),
                                 "exact")]
    prev_mean = jnp.zeros((cfg.horizon, act_dim))
    for call in sorted({k.split(".")[0] for k in pln}):
        p = f"{call}."
        t0, eval_mode = bool(pln[p + "t0"]), bool(pln[p + "eval_mode"])
        if t0:
            prev_mean = jnp.zeros((cfg.horizon, act_dim))  # an episode's first step (what our trainer passes)
        else:
            lines.append(compare(f"{p}prev_mean_in", prev_mean, pln[p + "prev_mean_in"], "action"))
        replay = Replay(draws_of(pln, p))
        obs = jnp.asarray(inp["act_obs"][int(pln[p + "obs_index"])])

        def section(col, state, obs=obs, prev_mean=prev_mean, eval_mode=eval_mode, replay=replay, p=p):
            check = col.add
            action, mean, t = plan(state.world, state.policy, obs, prev_mean, key, s, eval_mode, draws=replay,
                                   trace=True)
            check(p + "z", t["z"], pln[p + "z"], "latent")
            check(p + "pi_actions", t["pi_actions"], pln[p + "pi_actions"], "action")
            for j in range(s.iterations):
                q = f"{p}iter{j}."
                it = {k: v[j] for k, v in t["iter"].items()}
                for name in ("mean_in", "std_in", "actions", "mean_out", "std_out"):
                    check(q + name, it[name], pln[q + name], "action")
                check(q + "value", it["value"], pln[q + "value"][:, 0], "value")
                check(q + "elite_idxs", it["elite_idxs"], pln[q + "elite_idxs"], "exact")
                check(q + "elite_value", it["elite_value"], pln[q + "elite_value"][:, 0], "value")
                check(q + "score", it["score"], pln[q + "score"][:, 0], "action")
            check(p + "elite_actions", t["elite_actions"], pln[p + "elite_actions"], "action")
            check(p + "rand_idx", t["rand_idx"], pln[p + "rand_idx"], "exact")
            check(p + "chosen_actions", t["chosen_actions"], pln[p + "chosen_actions"], "action")
            check(p + "std_final", t["std_final"], pln[p + "std_final"], "action")
            check(p + "action_before_clamp", t["action_before_clamp"], pln[p + "action_before_clamp"], "action")
            check(p + "action", action, pln[p + "action"], "action")
            check(p + "mean", mean, pln[p + "mean"], "action")

        col = Collector()
        lines += col.run(section, state)
        lines += unused(call, replay)
        prev_mean = jnp.asarray(col.values[p + "mean"])  # the agent's stored mean warm-starts the next call
    return lines


def format_line(line: Line) -> str:
    atol, rtol = line.tol
    tol = f"atol {atol:g}" + (f" + rtol {rtol:g}" if rtol else "") if (atol or rtol) else "exact"
    verdict = "ok  " if line.ok else "FAIL"
    note = f"  ({line.note})" if line.note else ""
    return f"{verdict} {line.name:<42} max abs {line.abs_err:9.3g}  max rel {line.rel_err:9.3g}  [{tol}]{note}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tdmpc-glass check-official", description=__doc__.split("\n\n")[0])
    parser.add_argument("golden_dir", type=Path, help="a golden set: checkpoint.pt, inputs/forward/update/plan.npz")
    args = parser.parse_args(argv)
    try:
        lines = run_checks(args.golden_dir)
    except GoldenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for line in lines:
        print(format_line(line))
    failed = [line for line in lines if not line.ok]
    print(f"{len(lines) - len(failed)} of {len(lines)} quantities within tolerance"
          + (f"; FAILED: {', '.join(line.name for line in failed[:10])}" + (" ..." if len(failed) > 10 else "")
             if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
